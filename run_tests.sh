#!/usr/bin/env bash
# Installs what the tests need (.venv; the BigQuery emulator in .bqvenv) and
# runs the whole test suite. Needs redis-server on the PATH (.ci/run installs it).
# Extra arguments go to pytest (e.g. ./run_tests.sh -k dedup).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
# The BigQuery tests talk to a real BigQuery API: the local emulator (Python 3.13).
./scripts/bootstrap_bigquery_emulator.sh
exec "$ROOT/.venv/bin/python" -m pytest -q tests "$@"
