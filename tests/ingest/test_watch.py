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
from transforms.ingest.local_watch import watch_events


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


def test_watch_events_in_batches_hold_every_record_once(tmp_path):
  _write(str(tmp_path), 'a.jsonl', 't', 5, 1)
  clock = iter(range(100)).__next__
  events = list(watch_events(str(tmp_path / "*.jsonl"), 1, duration_s=10,
                             clock=lambda: float(clock()), sleep=lambda s: None,
                             batch_size=2))
  batches = [tv.value for e in events if type(e).__name__ == 'ElementEvent'
             for tv in e.timestamped_values]
  assert [len(b) for b in batches] == [2, 2, 1]
  assert len({r.origin for b in batches for r in b}) == 5


def test_streaming_run_counts_every_record_and_reconciles(tmp_path):
  """A local streaming run (micro-batched) that ends by itself writes its
  counters like a batch run: the summary, `pipeline_metrics`, and
  `pipelines.verify` finding every identity holding."""
  from tests.cli import metrics, run_module
  incoming = tmp_path / 'incoming'
  incoming.mkdir()
  db, cold = str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')
  rng = random.Random(5)
  now = datetime.datetime.now(datetime.timezone.utc)
  events = [make_event(rng, 'tenant-a', 'u%d' % (i % 3), 'click',
                       now - datetime.timedelta(seconds=40 - i))
            for i in range(20)]
  lines = [json.dumps(e) for e in events]
  lines += [json.dumps(dict(e, trace_id='retry')) for e in events[:3]]
  lines += ['{"broken', '   ', json.dumps(dict(events[0], schema_version='v9'))]
  temp = incoming / '.drop.tmp'
  temp.write_text('\n'.join(lines) + '\n')
  os.rename(temp, incoming / 'drop.jsonl')
  job = start_watch_job(incoming, db, cold, 8)
  out, err = job.communicate(timeout=180)
  assert job.returncode == 0, err[-3000:]
  assert 'records read 25, blank lines 1, events written 20' in out, out
  counted = metrics(db)
  assert (counted['input_records'], counted['duplicates'],
          counted['dead_letters'], counted['events_written']) == (25, 3, 2, 20)
  verify = run_module('pipelines.verify', '--hot_sink', 'duckdb:' + db,
                      '--cold_path', cold)
  assert 'FAIL' not in verify.stdout
