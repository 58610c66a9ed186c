"""Exact across runs (contract section 4): whatever the history of runs, every
view row equals the aggregate of the stored events it counts, and the cold
tier holds each stored event once.

Each history runs the real command (or, for streams, the real graph with a
TestStream) on a generated stream with retries and bad records of every kind,
then recounts every view from `events` in SQL (`pipelines.verify
.view_mismatches`), compares the views with one run over the whole stream,
and the cold tier's keys with the hot tier's. On DuckDB here; on the BigQuery
emulator in `test_histories_bigquery.py`.
"""
import datetime
import glob
import os
import shutil
import threading

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from pipelines import local_streaming, summary
from pipelines.generate import generate
from pipelines.graph import build
from pipelines.options import AnalyticsOptions
from pipelines.verify import VIEW_VALUES, view_mismatches
from schemas.records import RawRecord
from tests.cli import query, run_module
from tests.helpers import as_json, envelope, options

VIEWS = VIEW_VALUES  # each view's columns a recount must give again


@pytest.fixture(scope='module')
def stream(tmp_path_factory):
  """A generated stream in 4 files, and a warehouse of one run over it."""
  base = tmp_path_factory.mktemp('histories')
  data = str(base / 'data')
  generate(data, events=3000, users=60, tenants=3, files=4, seed=19,
           span_hours=2)
  files = sorted(glob.glob(os.path.join(data, 'events', '*.jsonl')))
  whole = str(base / 'whole.duckdb')
  _run(data, files, whole)
  return data, files, whole


def _args(data, files, db):
  folder = db + '.input'
  os.makedirs(folder, exist_ok=True)
  for path in files:  # the run's own files, by their own names
    target = os.path.join(folder, os.path.basename(path))
    if not os.path.exists(target):
      shutil.copy(path, target)
  return ['pipelines.analytics', '--input', os.path.join(folder, '*.jsonl'),
          '--profiles', os.path.join(data, 'profiles.jsonl'),
          '--hot_sink', 'duckdb:' + db, '--cold_path', db + '.cold',
          '--runner', 'FnApiRunner']


def _run(data, files, db):
  input_folder = db + '.input'
  shutil.rmtree(input_folder, ignore_errors=True)
  return run_module(*_args(data, files, db))


def _cold_keys(cold):
  files = glob.glob(os.path.join(cold, 'events', '*', '*', '*.parquet'))
  if not files:
    return []
  return sorted(r[0] for r in duckdb.connect().execute(
      'SELECT idempotency_key FROM read_parquet($f)', {'f': files}).fetchall())


def assert_exact(db, cold, whole=None):
  """The invariant of contract section 4 on a DuckDB warehouse (and, given
  `whole`, views equal to one run over the whole stream)."""
  con = duckdb.connect(db, read_only=True)
  try:
    assert view_mismatches(con) == {view: 0 for view in VIEWS}
    hot = sorted(r[0] for r in con.execute(
        'SELECT idempotency_key FROM events').fetchall())
    assert con.execute('SELECT count(*) FROM cold_outbox').fetchone()[0] == 0
  finally:
    con.close()
  assert hot and _cold_keys(cold) == hot, 'cold tier: each stored event once'
  if whole is not None:
    for view, columns in VIEWS.items():
      sql = 'SELECT %s FROM %s ORDER BY ALL' % (columns, view)
      assert query(db, sql) == query(whole, sql), view
    assert hot == [r[0] for r in query(
        whole, 'SELECT idempotency_key FROM events ORDER BY 1')]


def test_one_run_over_the_whole_stream_is_exact(stream):
  _, _, whole = stream
  assert_exact(whole, whole + '.cold')
  assert query(whole, 'SELECT count(*) FROM event_counts_1m')[0][0] > 100


def test_two_runs_in_sequence_over_the_halves(stream, tmp_path):
  data, files, whole = stream
  db = str(tmp_path / 'w.duckdb')
  for part in (files[:2], files[2:]):
    shutil.rmtree(db + '.input', ignore_errors=True)
    run_module(*_args(data, part, db))
  assert_exact(db, db + '.cold', whole)


def test_two_runs_at_once_over_the_halves(stream, tmp_path):
  data, files, whole = stream
  db = str(tmp_path / 'w.duckdb')
  failures = []

  def run(part, name):
    try:
      args = _args(data, part, db + name)
      args[args.index('--hot_sink') + 1] = 'duckdb:' + db
      args[args.index('--cold_path') + 1] = db + '.cold'
      run_module(*args)
    except Exception as e:  # the failed command's output, or the test's error
      failures.append(e)
  runs = [threading.Thread(target=run, args=(part, name)) for part, name in (
      (files[:2], '.a'), (files[2:], '.b'))]
  for thread in runs:
    thread.start()
  for thread in runs:
    thread.join()
  assert not failures, failures
  assert_exact(db, db + '.cold', whole)


def test_a_rerun_and_an_overlapping_backfill_change_nothing(stream, tmp_path):
  data, files, whole = stream
  db = str(tmp_path / 'w.duckdb')
  for part in (files[:3], files[:3], files[1:]):
    shutil.rmtree(db + '.input', ignore_errors=True)
    run_module(*_args(data, part, db))
  assert_exact(db, db + '.cold', whole)


_UTC = datetime.timezone.utc


def _purchase(minute, user, currency, order):
  text = '2024-03-01T10:%02d:10Z' % minute
  return as_json(envelope('purchase', event_time=text, ingested_at=text,
                          payload__user_id=user, payload__order_id=order,
                          payload__currency=currency, trace_id='t-' + order))


def test_a_replay_that_lands_events_adds_them_to_the_views(tmp_path):
  """Five purchases with a lower-case currency are dead letters; the replay
  repairs and lands them in the minute and the user-hour that already hold
  other events: the views count them too."""
  folder = tmp_path / 'in'
  folder.mkdir()
  lines = [_purchase(5, 'u1', 'EUR', 'ok-1'), _purchase(6, 'u1', 'EUR', 'ok-2')]
  lines += [_purchase(5, 'u1', 'eur', 'fix-%d' % i) for i in range(5)]
  (folder / 'e.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
  db, cold = str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')
  run_module('pipelines.analytics', '--input', str(folder / '*.jsonl'),
             '--hot_sink', 'duckdb:' + db, '--cold_path', cold,
             '--runner', 'FnApiRunner')
  assert query(db, 'SELECT count(*) FROM dead_letters') == [(5,)]
  assert query(db, 'SELECT event_count FROM user_activity_hourly') == [(2,)]
  run_module('pipelines.replay', '--hot_sink', 'duckdb:' + db,
             '--cold_path', cold, '--runner', 'FnApiRunner')
  assert query(db, 'SELECT count(*) FROM events') == [(7,)]
  assert query(db, "SELECT strftime(window_start, '%H:%M'), event_count FROM "
               'event_counts_1m ORDER BY 1') == [('10:05', 6), ('10:06', 1)]
  assert query(db, 'SELECT event_count FROM user_activity_hourly') == [(7,)]
  assert_exact(db, cold)
  run_module('pipelines.replay', '--hot_sink', 'duckdb:' + db,
             '--cold_path', cold, '--runner', 'FnApiRunner')
  assert_exact(db, cold)  # a second replay adds nothing


T0 = 1709287200  # 2024-03-01T10:00:00Z


def _raw(seconds, user, at):
  text = datetime.datetime.fromtimestamp(T0 + seconds, _UTC).strftime(
      '%Y-%m-%dT%H:%M:%SZ')
  data = as_json(envelope(event_time=text, ingested_at=text,
                          payload__user_id=user, payload__url='/%s' % user,
                          trace_id='t-%s-%s' % (user, at)))
  return beam.window.TimestampedValue(RawRecord(data, 'stream:%s:%s' % (
      user, at)), T0 + at)


def _stream_run(db, cold, elements, watermark, **flags):
  """The graph streaming `elements` (batches, each followed by the watermark
  in `watermark`) into the DuckDB warehouse `db` (or the sinks `flags`
  name); returns the run's counters."""
  local_streaming.mend()  # exact counters on the local runner, as a run has
  if db is not None:
    flags.update(hot_sink='duckdb:' + db, cold_path=cold)
  # One gate shard: a sparse stream, and a shard learns the watermark only
  # from the windows of the events it saw (`transforms/views/late_gate.py`).
  flags.setdefault('state_shards', 1)
  opts = options(runner='BundleBasedDirectRunner', allowed_lateness=600,
                 **flags)
  opts.view_as(StandardOptions).streaming = True
  stream = TestStream().advance_watermark_to(T0)
  for batch, mark in zip(elements, watermark):
    stream = stream.add_elements(batch).advance_processing_time(6)
    stream = stream.advance_watermark_to(T0 + mark)
  p = TestPipeline(options=opts)
  build(p, opts, source=p | stream.advance_watermark_to_infinity())
  result = p.run()
  result.wait_until_finish()
  counts = summary.read_counters(result)
  if db is not None:
    # The counts the pipeline itself wrote with its commits are the same.
    run_id = opts.view_as(AnalyticsOptions).run_id
    stored = summary.stored_counters(db, run_id)
    names = ('input_records', 'events_written', 'events_already_stored',
             'duplicates', 'dead_letters', 'dead_letters_written')
    assert {n: stored[n] for n in names} == {n: counts[n] for n in names}
  return counts


def test_a_restarted_stream_adds_late_events_to_windows_from_before(tmp_path):
  """A streaming job stopped and started again without its state: the second
  job sees late events for the first one's windows, a retry of one of its
  events, and an event older than the TTL with its retry: the views count
  every stored event once, the cold tier holds each once."""
  db, cold = str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')
  first = [[_raw(5, 'u1', 5), _raw(10, 'u2', 10)], [_raw(130, 'u3', 130)]]
  _stream_run(db, cold, first, [120, 200])
  assert query(db, 'SELECT sum(event_count) FROM event_counts_1m') == [(3,)]
  second = [[_raw(20, 'u4', 300), _raw(5, 'u1', 301)],   # late; a retry
            [_raw(40, 'u5', 320), _raw(140, 'u6', 330)],
            [_raw(-90000, 'old', 400)], [_raw(-90000, 'old', 401)]]
  counts = _stream_run(db, cold, second, [310, 340, 500, 600],
                       dedup_ttl=86400)
  assert_exact(db, cold)
  assert query(db, 'SELECT count(*) FROM events') == [(7,)]
  assert query(db, "SELECT strftime(window_start, '%H:%M'), event_count FROM "
               'event_counts_1m ORDER BY 1') == [('10:00', 4), ('10:02', 2)]
  # The event 25 hours old is too late for every view: stored, with one
  # letter naming them.
  assert query(db, "SELECT missed_views FROM events WHERE user_id = 'old'") == [
      (['user_activity_hourly', 'event_counts_1m', 'active_users_15m'],)]
  assert query(db, "SELECT error_kind FROM dead_letters") == [('late_event',)]
  # Its retry was deduplicated (the TTL runs from its arrival, not from its
  # event time, which is older than the TTL); u1's retry, whose first copy
  # the first job stored, was refused by the warehouse.
  assert (counts['duplicates'], counts['events_already_stored'],
          counts['events_written']) == (1, 1, 4)
