#!/usr/bin/env bash
# Installs what the tests need (.venv; the BigQuery emulator in .bqvenv) and
# runs the whole test suite; installs Debian's redis-server when run as root.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k dedup).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
# The Redis tests start a real redis-server (Debian's package).
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "the tests need redis-server: sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
# The BigQuery tests talk to a real BigQuery API: the local emulator (Python 3.13).
./scripts/bootstrap_bigquery_emulator.sh
exec "$ROOT/.venv/bin/python" -m pytest -q tests "$@"
