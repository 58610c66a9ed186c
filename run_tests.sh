#!/usr/bin/env bash
# Installs what the tests need (.venv; the BigQuery emulator in .bqvenv) and
# runs the whole test suite; installs Debian's redis-server, chromium and
# prometheus when run as root.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k dedup).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
# Debian packages the tests use: a real redis-server for the Redis tests,
# chromium (headless) for the dashboard test, and prometheus (with promtool)
# for the alert rules.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "the tests need: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
# The BigQuery tests talk to a real BigQuery API: the local emulator (Python 3.13).
./scripts/bootstrap_bigquery_emulator.sh
exec "$ROOT/.venv/bin/python" -m pytest -q tests "$@"
