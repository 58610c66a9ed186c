"""Streaming mode, local: files dropped into a watched folder appear as rows
while the job runs (DirectRunner, --streaming --input_watch)."""
import datetime
import json
import os
import random
import time

import duckdb

from pipelines.generate import make_event
from tests.cli import start_watch_job
from transforms.local_watch import watch_events


def _write(folder, name, tenant, n, seed):
  rng = random.Random(seed)
  now = datetime.datetime.now(datetime.timezone.utc)
  temp = os.path.join(folder, '.%s.tmp' % name)
  with open(temp, 'w') as f:
    for i in range(n):
      f.write(json.dumps(make_event(rng, tenant, 'u%d' % (i % 4), 'click',
                                    now - datetime.timedelta(seconds=30 - i))) + '\n')
  os.rename(temp, os.path.join(folder, name))  # complete when it appears


def _count(db, tenant):
  try:
    con = duckdb.connect(db, read_only=True)
  except duckdb.Error:
    return None  # not created yet, or the job holds the write lock right now
  try:
    return con.execute('SELECT count(*) FROM events WHERE tenant_id = ?',
                       [tenant]).fetchone()[0]
  except duckdb.Error:
    return None
  finally:
    con.close()


def _wait_for(db, tenant, n, job, timeout=60):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if _count(db, tenant) == n:
      return True
    assert job.poll() is None, 'the job ended before the rows arrived'
    time.sleep(0.5)
  return False


def test_files_dropped_into_watched_folder_appear_as_rows(tmp_path):
  incoming = tmp_path / 'incoming'
  incoming.mkdir()
  db = str(tmp_path / 'w.duckdb')
  _write(str(incoming), 'first.jsonl', 'tenant-a', 12, 1)
  job = start_watch_job(incoming, db, str(tmp_path / 'cold'), 40)
  try:
    assert _wait_for(db, 'tenant-a', 12, job), 'first file never appeared'
    _write(str(incoming), 'second.jsonl', 'tenant-b', 7, 2)
    assert _wait_for(db, 'tenant-b', 7, job), 'second file never appeared'
    assert job.poll() is None, 'rows arrived while the job was still running'
  finally:
    job.kill() if job.poll() is None else None
    job.wait(timeout=30)


def test_watch_events_read_each_file_once_then_stop(tmp_path):
  _write(str(tmp_path), 'a.jsonl', 't', 3, 1)
  clock = iter(range(100)).__next__
  events = list(watch_events(str(tmp_path / "*.jsonl"), 1, duration_s=10,
                             clock=lambda: float(clock()), sleep=lambda s: None))
  kinds = [type(e).__name__ for e in events]
  assert kinds.count('ElementEvent') == 1
  assert len(events[0].timestamped_values) == 3
  assert kinds[-1] == 'WatermarkEvent' and 'ProcessingTimeEvent' in kinds
