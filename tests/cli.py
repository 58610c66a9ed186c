"""Runs the real command lines in a subprocess and reads their outputs back."""
import os
import subprocess
import sys

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, check=True, timeout=900):
  """Runs `python -m module args`; returns the CompletedProcess."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  done = subprocess.run(
      [sys.executable, '-m', module] + list(args), cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)
  if check and done.returncode != 0:
    raise AssertionError('%s failed (%d):\n%s\n%s' % (
        module, done.returncode, done.stdout[-3000:], done.stderr[-5000:]))
  return done


def start_watch_job(incoming, db, cold, duration_s):
  """The streaming command watching `incoming/*.jsonl` (DirectRunner), in a
  subprocess; the caller kills it."""
  return subprocess.Popen(
      [sys.executable, '-m', 'pipelines.analytics', '--streaming',
       '--input_watch', os.path.join(str(incoming), '*.jsonl'),
       '--watch_interval_s', '1', '--watch_duration_s', str(duration_s),
       '--hot_sink', 'duckdb:' + db, '--cold_path', cold,
       '--runner', 'DirectRunner'],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def query(db, sql, params=None):
  con = duckdb.connect(db, read_only=True)
  try:
    return con.execute(sql, params or []).fetchall()
  finally:
    con.close()


def metrics(db):
  """The newest run's counters from pipeline_metrics, by name."""
  rows = query(db, 'SELECT name, value FROM pipeline_metrics WHERE run_id = '
               '(SELECT max(run_id) FROM pipeline_metrics)')
  return dict(rows)
