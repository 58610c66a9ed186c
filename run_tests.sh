#!/usr/bin/env bash
# Installs what the tests need into .venv and runs the whole test suite.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k dedup).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
exec "$ROOT/.venv/bin/python" -m pytest -q tests "$@"
