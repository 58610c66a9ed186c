#!/usr/bin/env bash
# Runs the main job locally on embedded defaults: generates a sample, runs the
# pipeline on the DirectRunner into out/warehouse.duckdb and out/cold, then
# shows the summary and a few rows of each table.
#   ./run_local.sh                 # 20,000 sample events
#   EVENTS=200000 ./run_local.sh   # a bigger sample
#   ./run_local.sh --input 'my/*.jsonl'  # your own files (extra flags are passed on)
#   ./run_local.sh --streaming     # a live stream: files dropped into data/incoming
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
PY="$ROOT/.venv/bin/python"
EVENTS="${EVENTS:-20000}"
DATA="${DATA:-data/sample}"
OUT="${OUT:-out}"

if [ "${1:-}" = "--streaming" ]; then
  shift
  INCOMING="$ROOT/data/incoming"
  rm -rf "$INCOMING" "$OUT/stream.duckdb" "$OUT/stream.duckdb.staging" "$OUT/stream-cold"
  mkdir -p "$INCOMING" "$OUT"
  echo "streaming: watching $INCOMING; files are dropped every 5 s for 40 s"
  "$PY" -m pipelines.analytics --streaming --runner DirectRunner \
    --input_watch "$INCOMING/*.jsonl" --watch_interval_s 1 --watch_duration_s 45 \
    --allowed_lateness 600 \
    --hot_sink "duckdb:$OUT/stream.duckdb" --cold_path "$OUT/stream-cold" "$@" &
  job=$!
  trap 'kill $job 2>/dev/null || true' EXIT
  "$PY" -m pipelines.demo_stream --folder "$INCOMING" \
    --hot_sink "duckdb:$OUT/stream.duckdb" --files 8 --every_s 5
  wait $job
  trap - EXIT
  "$PY" -m pipelines.show --hot_sink "duckdb:$OUT/stream.duckdb" --cold_path "$OUT/stream-cold"
  exit 0
fi

# The sample is made again when its size or the generator's code changed.
STAMP="$EVENTS $(cat pipelines/generate.py producer/*.py | sha256sum | cut -c1-16)"
if [ ! -f "$DATA/manifest.json" ] || [ "$(cat "$DATA/.events" 2>/dev/null)" != "$STAMP" ]; then
  rm -rf "$DATA"
  echo "generating $EVENTS sample events into $DATA"
  "$PY" -m pipelines.generate --out "$DATA" --events "$EVENTS" --users 500 --tenants 5 --files 4 >/dev/null
  echo "$STAMP" > "$DATA/.events"
fi

"$PY" -m pipelines.analytics \
  --input "$DATA/events/*.jsonl" \
  --profiles "$DATA/profiles.jsonl" \
  --hot_sink "duckdb:$OUT/warehouse.duckdb" \
  --cold_path "$OUT/cold" \
  --runner DirectRunner \
  "$@"

"$PY" -m pipelines.show --hot_sink "duckdb:$OUT/warehouse.duckdb" --cold_path "$OUT/cold"
