#!/usr/bin/env bash
# Runs the main job locally on embedded defaults: generates a sample, runs the
# pipeline on the DirectRunner into out/warehouse.duckdb and out/cold, then
# shows the summary and a few rows of each table.
#   ./run_local.sh                 # 20,000 sample events
#   EVENTS=200000 ./run_local.sh   # a bigger sample
#   ./run_local.sh --input 'my/*.jsonl'  # your own files (extra flags are passed on)
#   ./run_local.sh --streaming     # a live stream: files dropped into data/incoming
#   ./run_local.sh --pubsub        # the sample through Google's Pub/Sub emulator
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

if [ "${1:-}" = "--pubsub" ]; then
  shift
  command -v gcloud >/dev/null 2>&1 || {
    echo "--pubsub needs Google's gcloud with its Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator)" >&2
    exit 1; }
  PORT="${PUBSUB_PORT:-8085}"
  rm -rf "$OUT/pubsub.duckdb" "$OUT/pubsub.duckdb.staging" "$OUT/pubsub-cold" data/pubsub
  mkdir -p "$OUT"
  # Events of the last 20 minutes: the watermark follows the wall clock, and
  # the allowed lateness is an hour (older events would be too late).
  "$PY" -m pipelines.generate --out data/pubsub --events "$EVENTS" --users 100 \
    --tenants 3 --files 2 --start recent --span_hours 0.33 >/dev/null
  echo "starting the Pub/Sub emulator on 127.0.0.1:$PORT"
  gcloud beta emulators pubsub start --host-port="127.0.0.1:$PORT" --project=demo-project --quiet >/dev/null 2>&1 &
  emulator=$!
  stop_emulator() {
    pkill -P "$emulator" 2>/dev/null || true   # gcloud's Java child
    kill "$emulator" 2>/dev/null || true
  }
  trap stop_emulator EXIT
  for _ in $(seq 60); do
    curl -s "http://127.0.0.1:$PORT/v1/projects/demo-project/topics" >/dev/null 2>&1 && break
    sleep 0.5
  done
  export PUBSUB_EMULATOR_HOST="127.0.0.1:$PORT"
  "$PY" -m pipelines.pubsub_demo --project demo-project --topic events \
    --subscription events --data data/pubsub
  echo "streaming the subscription for 40 s (each message acknowledged once stored)"
  "$PY" -m pipelines.analytics --streaming --runner DirectRunner \
    --input_subscription projects/demo-project/subscriptions/events \
    --profiles data/pubsub/profiles.jsonl --watch_duration_s 40 \
    --hot_sink "duckdb:$OUT/pubsub.duckdb" --cold_path "$OUT/pubsub-cold" "$@"
  "$PY" -m pipelines.show --hot_sink "duckdb:$OUT/pubsub.duckdb" --cold_path "$OUT/pubsub-cold"
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
