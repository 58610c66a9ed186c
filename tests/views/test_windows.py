"""The late-data gate (TestStream drives the watermark on
BundleBasedDirectRunner with --streaming) and the views the hot commit
maintains from the events it stores (`view_sql`), on real DuckDB files."""
import datetime
import json

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from schemas import tables
from schemas.records import RawRecord
from schemas.rows import events_table, late_letter_json
from tests.cli import query
from tests.helpers import as_json, envelope, options
from transforms.ingest.decoding import NOT_PROCESSED
from transforms.ingest.decode import decode_and_validate
from transforms.sinks.duckdb_sink import commit_staged
from transforms.sinks.staging import write_staging_file
from transforms.views.specs import micros
from transforms.views.late_gate import (FLOORS, LateDataGate, ViewPolicy, mark_late,
                                mark_late_table)

UTC = datetime.timezone.utc
T0 = 1709287200  # 2024-03-01T10:00:00Z
LATENESS = 600


def _event(seconds, user='u1', event_type='page_view', **kw):
  when = datetime.datetime.fromtimestamp(T0 + seconds, UTC)
  text = when.strftime('%Y-%m-%dT%H:%M:%S') + 'Z'
  return decode_and_validate(RawRecord(as_json(envelope(
      event_type, event_time=text, ingested_at=text, trace_id='t%s' % seconds,
      payload__user_id=user, **kw)), 'f:%s:%s' % (seconds, user)))[0]


def _batch(events):
  """An events batch, as the stages pass them (`EVENT_BATCH_SCHEMA`)."""
  return events_table(events, NOT_PROCESSED, with_source=True)


def _at(seconds, user='u1', **kw):
  """A one-event batch, timestamped."""
  return beam.window.TimestampedValue(
      _batch([_event(seconds, user, **kw)]), T0 + seconds)


def _marks(table):
  """(user, missed views, (letter kind, its record names /too-late) or
  False) per row."""
  for row in table.to_pylist():
    letter = bool(row['late_letter']) and json.loads(row['late_letter'])
    yield (row['user_id'], tuple(row['missed_views']), letter and (
        letter['error_kind'], '/too-late' in letter['raw']))


def _streaming():
  opts = options(runner='BundleBasedDirectRunner')
  opts.view_as(StandardOptions).streaming = True
  return opts


def test_gate_marks_only_what_came_after_the_window_end_and_lateness():
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_at(5), _at(10, 'u2')])
            .advance_watermark_to(T0 + 120)
            # late but within the 600 s lateness: counted
            .add_elements([_at(20, 'u3')])
            # past the minute window's end + lateness, not the others'
            .advance_watermark_to(T0 + 60 + LATENESS + 1)
            .add_elements([_at(30, 'u4', payload__url='/too-late')])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    # One shard: it sees every event, so it learns every window's end.
    gated = p | stream | LateDataGate(ViewPolicy(allowed_lateness_s=LATENESS),
                                      shards=1)
    assert_that(gated['events'] | beam.FlatMap(_marks), equal_to([('u1', (), False), ('u2', (), False), ('u3', (), False),
                  ('u4', ('event_counts_1m',), ('late_event', True))]),
        label='marked')
    # The floor reports follow the watermark: the minute window's end at
    # least, and each a time the watermark passed (never the end of time).
    def floors_reached_the_window(floors):
      assert floors and max(floors) >= (T0 + 60) * 1000000, floors
    assert_that(gated[FLOORS], floors_reached_the_window, label='floors')


def test_a_view_too_late_for_an_events_earliest_window_misses_it_whole():
  # 10:04 is in the sliding windows starting 09:50, 09:55, 10:00; a floor
  # past the 09:50 window's end + lateness (10:05 + 600 s) but not the
  # others' misses the view whole (and its minute window 10:04-10:05 too).
  event = _event(240, 'u2')
  floor = (T0 + 300 + LATENESS + 5) * 1000000
  marked = mark_late(event, floor, LATENESS)
  assert marked.missed_views == ('event_counts_1m', 'active_users_15m')
  assert marked.late_letter.error_message.startswith(
      'too late for event_counts_1m, active_users_15m')
  # The same on an events batch, the letter as the sink stages it.
  now = datetime.datetime.now(UTC)
  table, ends = mark_late_table(_batch([event, _event(3000, 'u3')]), floor,
                                LATENESS, now)
  assert [tuple(m) for m in table.column('missed_views').to_pylist()] == [
      marked.missed_views, ()]
  assert table.column('late_letter').to_pylist() == [
      late_letter_json(marked, now), None]
  assert (T0 + 300 + LATENESS) * 1000000 in ends
  # Both end at 10:05: a floor before 10:15 misses neither.
  assert mark_late(event, floor - 10 * 1000000, LATENESS) is event
  # An hour later the hourly window (10:00-11:00) is missed too.
  assert mark_late(event, (T0 + 3600 + LATENESS) * 1000000,
                   LATENESS).missed_views == (
      'user_activity_hourly', 'event_counts_1m', 'active_users_15m')


def _commit(tmp_path, events, streaming=False, floor=-2 ** 63):
  db = str(tmp_path / 'w.duckdb')
  path = write_staging_file(str(tmp_path / 'staging'), tables.STAGED_EVENTS,
                            events_table(events, datetime.datetime.now(UTC)))
  return db, commit_staged(db, [('events', path)], streaming=streaming,
                           floor_us=floor)


def test_views_grow_by_what_each_commit_stores_and_never_count_twice(tmp_path):
  first = [_event(5, 'u1'), _event(10, 'u2'), _event(400, 'u1')]
  db, result = _commit(tmp_path, first)
  assert result['events'] == (3, 3)
  # A second commit: one event already stored, one new user, one repeat.
  db, result = _commit(tmp_path, [_event(10, 'u2'), _event(20, 'u3'),
                                  _event(30, 'u1')])
  assert result['events'] == (3, 2)
  assert query(db, "SELECT strftime(window_start, '%H:%M'), event_count, "
               'pane_timing FROM event_counts_1m ORDER BY 1') == [
                   ('10:00', 4, 'LATE'), ('10:06', 1, 'ON_TIME')]
  assert query(db, 'SELECT user_id, event_count, strftime(last_event_time, '
               "'%H:%M:%S') FROM user_activity_hourly ORDER BY 1") == [
                   ('u1', 3, '10:06:40'), ('u2', 1, '10:00:10'),
                   ('u3', 1, '10:00:20')]
  # Distinct users per sliding window, counted once across the commits.
  assert query(db, "SELECT strftime(window_start, '%H:%M'), active_users FROM "
               'active_users_15m ORDER BY 1') == [
                   ('09:50', 3), ('09:55', 3), ('10:00', 3), ('10:05', 1)]


def test_a_missed_view_does_not_count_the_event_and_its_letter_comes_with_it(
    tmp_path):
  late = mark_late(_event(30, 'u4'), (T0 + 60 + LATENESS + 1) * 1000000,
                   LATENESS)
  db, result = _commit(tmp_path, [_event(5, 'u1'), late], streaming=True)
  assert result['late_letters'] == (1, 1)
  assert query(db, 'SELECT event_count FROM event_counts_1m') == [(1,)]
  assert query(db, 'SELECT user_id, event_count FROM user_activity_hourly '
               'ORDER BY 1') == [('u1', 1), ('u4', 1)]
  assert query(db, 'SELECT error_kind, idempotency_key FROM dead_letters') == [
      ('late_event', late.idempotency_key)]
  # The same late event again (a rerun): stored already, so no second
  # letter and no view changes.
  db, result = _commit(tmp_path, [late], streaming=True)
  assert result['events'] == (1, 0) and result['late_letters'] == (0, 0)
  assert query(db, 'SELECT count(*) FROM dead_letters') == [(1,)]


def test_streaming_rows_are_early_until_the_watermark_passes_then_late(
    tmp_path):
  db, _ = _commit(tmp_path, [_event(5)], streaming=True, floor=T0 * 1000000)
  assert query(db, 'SELECT pane_timing FROM event_counts_1m') == [('EARLY',)]
  # A report of the watermark past the window's end makes it final.
  commit_staged(db, [], streaming=True, floor_us=(T0 + 61) * 1000000)
  assert query(db, 'SELECT event_count, pane_timing FROM event_counts_1m') == [
      (1, 'ON_TIME')]
  # An event added after that is a late update.
  _commit(tmp_path, [_event(7, 'u2')], streaming=True,
          floor=(T0 + 61) * 1000000)
  assert query(db, 'SELECT event_count, pane_timing FROM event_counts_1m') == [
      (2, 'LATE')]
  assert micros(_event(7).event_time) < (T0 + 61) * 1000000


def test_gate_and_dedup_spread_over_eight_keys_per_worker():
  from apache_beam.options.pipeline_options import PipelineOptions
  from pipelines.options import state_shards
  from transforms.views.late_gate import _shard_of
  assert state_shards(PipelineOptions(['--max_num_workers', '10'])) == 80
  assert state_shards(PipelineOptions(['--parallelism', '4'])) == 32
  assert state_shards(PipelineOptions(['--direct_num_workers', '2'])) == 16
  assert state_shards(PipelineOptions([])) == 8
  assert state_shards(PipelineOptions(['--state_shards', '5',
                                       '--max_num_workers', '10'])) == 5
  # Batches of a stream land on (nearly) every shard, not on one key.
  keys = {_shard_of(_batch([_event(i, 'u%d' % i)]), 16)[0] for i in range(200)}
  assert len(keys) >= 14 and keys <= set(range(16))


def test_a_shard_that_saw_no_event_knows_the_watermark_from_its_primer():
  """Eight shards, a stream whose watermark follows the wall clock: a first
  event two hours old, on whichever shard, is too late for every view,
  because each shard's timer loop starts at the job's start."""
  import time
  now = int(time.time())
  old = _event(now - 7200 - T0, 'u-old')
  stream = (TestStream()
            .advance_watermark_to(now + 1)
            .add_elements([beam.window.TimestampedValue(_batch([old]), now + 1)])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    gated = p | stream | LateDataGate(ViewPolicy(allowed_lateness_s=LATENESS),
                                      shards=8)
    assert_that(gated['events'] | beam.FlatMap(lambda t: [
        tuple(m) for m in t.column('missed_views').to_pylist()]),
        equal_to([('user_activity_hourly', 'event_counts_1m',
                   'active_users_15m')]))
