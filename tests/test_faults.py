"""Faults, injected for real: the warehouse locked by another process during the
commit, the cold store unwritable, the job killed in the middle of a run. After
each, the tiers hold what a clean run gives: nothing lost, nothing doubled."""
import glob
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from benchmarks.processes import child_pids
from pipelines.generate import generate
from tests.cli import ROOT, metrics, query, run_module

VIEW_SQL = {
    'user_activity_hourly': 'window_start, tenant_id, user_id, event_count',
    'event_counts_1m': 'window_start, tenant_id, event_type, event_count',
    'active_users_15m': 'window_start, tenant_id, active_users',
}


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  base = tmp_path_factory.mktemp('faults')
  data = str(base / 'data')
  generate(data, events=20000, users=200, tenants=3, files=4, seed=21)
  clean = str(base / 'clean.duckdb')
  _run(data, clean)
  return data, clean


def _args(data, db):
  return ['pipelines.analytics', '--input', data + '/events/*.jsonl',
          '--profiles', data + '/profiles.jsonl', '--hot_sink', 'duckdb:' + db,
          '--cold_path', db + '.cold', '--runner', 'FnApiRunner']


def _run(data, db, check=True):
  return run_module(*_args(data, db), check=check)


def _cold_keys(root):
  files = glob.glob(os.path.join(root, 'events', '*', '*', '*.parquet'))
  return sorted(r[0] for r in duckdb.connect().execute(
      'SELECT idempotency_key FROM read_parquet($f)', {'f': files}).fetchall())


def _tiers(db):
  """Everything a clean run determines (wall-clock columns left out)."""
  snapshot = {
      'events': query(db, 'SELECT idempotency_key, trace_id, user_tier, payload '
                      'FROM events ORDER BY 1'),
      'dead_letters': query(db, 'SELECT dead_letter_id, error_kind FROM '
                            'dead_letters ORDER BY 1'),
      'cold': _cold_keys(db + '.cold'),
  }
  for view, columns in VIEW_SQL.items():
    snapshot[view] = query(db, 'SELECT %s FROM %s ORDER BY 1, 2, 3' % (
        columns, view))
  return snapshot


def test_clean_run_tiers_agree(sample):
  _, clean = sample
  tiers = _tiers(clean)
  assert tiers['events'] and tiers['cold'] == [k for k, *_ in tiers['events']]


def test_warehouse_locked_by_another_process_during_the_commit(sample, tmp_path):
  """Another process holds DuckDB's write lock for 8 s from the start: the
  commit waits for it (transient), then writes every row once."""
  data, clean = sample
  db = str(tmp_path / 'w.duckdb')
  duckdb.connect(db).close()
  locker = subprocess.Popen([sys.executable, '-c', (
      'import duckdb, sys, time\n'
      'con = duckdb.connect(sys.argv[1])\n'
      'print("locked", flush=True)\n'
      'time.sleep(8)\n'
      'con.close()\n'), db], stdout=subprocess.PIPE, text=True)
  assert locker.stdout.readline().strip() == 'locked'
  started = time.monotonic()
  done = _run(data, db)
  locker.wait(timeout=30)
  assert time.monotonic() - started >= 8, 'the run did not meet the lock'
  assert 'events written' in done.stdout
  assert _tiers(db) == _tiers(clean)


def test_unwritable_cold_store_fails_loudly_then_a_rerun_completes(sample, tmp_path):
  data, clean = sample
  db = str(tmp_path / 'w.duckdb')
  # A file where the cold store's events folder must go: no write can succeed
  # (permissions would not stop root, which CI runs as).
  os.makedirs(db + '.cold')
  blocker = os.path.join(db + '.cold', 'events')
  with open(blocker, 'w') as f:
    f.write('not a folder')
  failed = _run(data, db, check=False)
  assert failed.returncode != 0
  assert 'events' in failed.stderr[-5000:]
  # The failed run is recorded (monitoring's JobFailed pages on it).
  assert metrics(db)['run_succeeded'] == 0
  os.remove(blocker)
  _run(data, db)
  assert _tiers(db) == _tiers(clean)
  counts = metrics(db)  # the rerun's own accounting
  assert counts['run_succeeded'] == 1
  assert counts['events_written'] + counts['events_already_stored'] + \
      counts['duplicates'] + counts['dead_letters'] == counts['input_records']


def _entries(folder):
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _first_file(folder, suffix):
  for _, _, files in os.walk(folder):
    if any(f.endswith(suffix) for f in files):
      return True
  return False


@pytest.mark.parametrize('moment', ['staging', 'cold'])
def test_job_killed_mid_run_then_repeated_gives_a_clean_runs_rows(
    sample, tmp_path, moment):
  """SIGKILL to the whole job as soon as it has written its first hot staging
  file (before the commit) or its first cold file (mid-way through the cold
  tier), then the same run again."""
  data, clean = sample
  db = str(tmp_path / 'w.duckdb')
  job = subprocess.Popen([sys.executable, '-m'] + _args(data, db), cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
  folder = db + ('.staging' if moment == 'staging' else '.cold')
  deadline = time.monotonic() + 120
  while not _first_file(folder, '.parquet') and time.monotonic() < deadline:
    assert job.poll() is None, 'the run ended before it could be killed'
    time.sleep(0.02)
  os.killpg(job.pid, signal.SIGKILL)
  job.wait(timeout=30)
  assert job.returncode == -signal.SIGKILL
  _run(data, db)
  assert _tiers(db) == _tiers(clean)
  # Killed in the cold tier's export, the commit's rows waited in the
  # outbox; the rerun stored nothing new but exported them.
  assert query(db, 'SELECT count(*) FROM cold_outbox') == [(0,)]


def _children_by_command(pid):
  """{child pid: its command line} of a process's children now."""
  found = {}
  for child in child_pids(pid):
    try:
      with open('/proc/%d/cmdline' % child) as f:
        found[child] = f.read()
    except OSError:
      continue  # it ended meanwhile
  return found


def _sdk_workers(pid):
  return [child for child, command in _children_by_command(pid).items()
          if 'sdk_worker_main' in command]


def test_one_worker_process_killed_mid_run(sample, tmp_path):
  """Two worker processes (`--direct_running_mode=multi_processing`); one is
  SIGKILLed once staging has begun. The runner replaces it and the run
  completes with a clean run's rows in both tiers."""
  data, clean = sample
  db = str(tmp_path / 'w.duckdb')
  job = subprocess.Popen(
      [sys.executable, '-m'] + _args(data, db) + [
          '--direct_running_mode=multi_processing', '--direct_num_workers=2'],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True)
  killed = None
  deadline = time.monotonic() + 120
  while killed is None and time.monotonic() < deadline and job.poll() is None:
    workers = _sdk_workers(job.pid)
    if len(workers) == 2 and _first_file(db + '.staging', '.parquet'):
      os.kill(workers[0], signal.SIGKILL)
      killed = workers[0]
    time.sleep(0.02)
  try:
    out, err = job.communicate(timeout=180)
  except subprocess.TimeoutExpired:
    os.killpg(job.pid, signal.SIGKILL)
    raise AssertionError('the run hung after a worker was killed')
  assert killed, 'no worker was killed (the run ended first)'
  assert job.returncode == 0, err[-2000:]
  # Where a fact was sent twice (a retry with a new trace_id), the copy the
  # dedup step sees first is kept; with two processes that order is not the
  # clean single-process run's, so the kept trace_id may differ. Everything
  # else is the same, row for row.
  got, expected = _tiers(db), _tiers(clean)
  for tiers in (got, expected):
    tiers['events'] = [(k, tier, payload) for k, _, tier, payload in tiers['events']]
  assert got == expected


def _decode_helper(job, deadline_s=120):
  """The job's decode helper (`parallel_decode`): its forked child, the same
  command line as the job; None if the run ended first."""
  with open('/proc/%d/cmdline' % job.pid) as f:
    command = f.read()
  deadline = time.monotonic() + deadline_s
  while job.poll() is None and time.monotonic() < deadline:
    for child, child_command in _children_by_command(job.pid).items():
      if child_command == command:
        return child
    time.sleep(0.002)
  return None


def _gone(pid, within_s):
  deadline = time.monotonic() + within_s
  while time.monotonic() < deadline:
    try:
      with open('/proc/%d/stat' % pid) as f:
        if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
          return True
    except OSError:
      return True
    time.sleep(0.1)
  return False


@pytest.mark.parametrize('killed', ['job', 'helper'])
def test_decode_helper_and_job_killed(sample, tmp_path, killed):
  """The decode step's helper process (one local worker, batches of 50, so
  that it lives long enough to be seen beside a fast run):
  SIGKILL to the job alone ends the helper too (no orphan), and a rerun
  gives a clean run's rows; SIGKILL to the helper is survived (its batches
  decoded in the job) and the run gives a clean run's rows."""
  data, clean = sample
  db = str(tmp_path / 'w.duckdb')
  job = subprocess.Popen(
      [sys.executable, '-m'] + _args(data, db) + ['--read_batch_size', '50'],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    helper = _decode_helper(job)
    assert helper, 'the run ended before its helper was seen'
    os.kill(job.pid if killed == 'job' else helper, signal.SIGKILL)
    out, err = job.communicate(timeout=180)
  finally:
    if job.poll() is None:
      os.killpg(job.pid, signal.SIGKILL)
  if killed == 'job':
    assert job.returncode == -signal.SIGKILL
    assert _gone(helper, within_s=5), 'the helper outlived the killed job'
    _run(data, db)
  else:
    assert job.returncode == 0, err[-2000:]
    assert _gone(helper, within_s=1)
  assert _tiers(db) == _tiers(clean)
