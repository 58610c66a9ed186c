#!/usr/bin/env bash
# Creates .venv (Python 3.10+) if missing and installs the pinned requirements and
# the package in editable mode. Sourced by run_local.sh and run_tests.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "creating $ROOT/.venv" >&2
  "$PYTHON" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.installed"
if [ ! -f "$stamp" ] || [ "$ROOT/requirements.txt" -nt "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
  echo "installing requirements into .venv (first run takes about a minute)" >&2
  # pip's and setuptools' chatter goes to a log, shown only if the install
  # fails: a clean install prints nothing the user did not ask for.
  log="$ROOT/.venv/install.log"
  if ! { "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip &&
         "$ROOT/.venv/bin/python" -m pip install -q -r "$ROOT/requirements.txt" \
           -e "$ROOT"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing the requirements failed (log: $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
