#!/usr/bin/env bash
# Installs the local BigQuery emulator (PyPI `local-bigquery`, which serves the
# BigQuery REST API over DuckDB) into .bqvenv with Python 3.13, as the tests that
# talk to "BigQuery" need. The pins are the combination that works offline: the
# DuckDB extensions come from PyPI packages and are installed into DuckDB's
# extension folder, so DuckDB never tries to download them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.bqvenv"
if [ -x "$VENV/bin/local-bigquery" ] && [ -f "$VENV/.installed" ]; then
  exit 0
fi
PY313="${PY313:-}"
if [ -z "$PY313" ]; then
  for candidate in python3.13 "$HOME/.pyenv/versions/3.13.0/bin/python" \
      $(ls -d "$HOME"/.pyenv/versions/3.13*/bin/python 2>/dev/null); do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
        >/dev/null 2>&1; then PY313="$candidate"; break; fi
  done
fi
if [ -z "$PY313" ]; then
  echo "the BigQuery emulator needs Python 3.13 (set PY313=/path/to/python3.13)" >&2
  exit 1
fi
echo "installing the local BigQuery emulator into .bqvenv ($PY313)" >&2
"$PY313" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "local-bigquery==0.3.2" "duckdb==1.5.5" \
  "duckdb-extension-ducklake==1.5.5" "duckdb-extension-icu==1.5.5" \
  "duckdb-extension-spatial==1.5.5"
"$VENV/bin/python" - <<'PY'
import glob, os, sys
import duckdb
con = duckdb.connect()
pattern = os.path.join(sys.prefix, 'lib', 'python3*', 'site-packages',
                       'duckdb_extension_*', 'extensions', '*', '*.duckdb_extension')
found = glob.glob(pattern)
if len(found) < 3:
    sys.exit('DuckDB extension files not found under %s' % pattern)
for path in found:
    con.execute("FORCE INSTALL '%s'" % path)
PY
touch "$VENV/.installed"
