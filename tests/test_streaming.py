"""The whole pipeline in streaming mode with TestStream: rows in both tiers, a
late pane replacing a row, a too-late event kept in events and dead-lettered,
on the graph every runner runs."""
import datetime
import glob
import os

import apache_beam as beam
import pyarrow.dataset as ds
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from pipelines.analytics import build
from schemas.records import RawRecord
from tests.cli import query
from tests.helpers import as_json, envelope, options

UTC = datetime.timezone.utc
T0 = 1709287200  # 2024-03-01T10:00:00Z


def _raw(seconds, user, url='/'):
  text = datetime.datetime.fromtimestamp(T0 + seconds, UTC).strftime(
      '%Y-%m-%dT%H:%M:%SZ')
  data = as_json(envelope(event_time=text, ingested_at=text, payload__user_id=user,
                          payload__url=url, trace_id='t-%s' % user))
  return beam.window.TimestampedValue(RawRecord(data, 'stream:%s' % user), T0 + seconds)


def late_data_stream():
  """Two on-time events, one late within 600 s of lateness, one too late."""
  return (TestStream()
          .advance_watermark_to(T0)
          .add_elements([_raw(5, 'u1'), _raw(10, 'u2')])
          .advance_watermark_to(T0 + 120)
          .advance_processing_time(10)
          .add_elements([_raw(20, 'u3')])                    # late, in time
          .advance_watermark_to(T0 + 60 + 600 + 1)
          .advance_processing_time(10)
          .add_elements([_raw(30, 'u4', '/too-late')])       # too late
          .advance_processing_time(10)
          .advance_watermark_to_infinity())


def run_late_data_stream(**flags):
  """The whole pipeline, streaming, on `late_data_stream()`. One gate shard:
  the stream is four events, and a shard learns the watermark only from the
  windows of the events it saw (`transforms/views/late_gate.py`)."""
  flags.setdefault('state_shards', 1)
  opts = options(runner='BundleBasedDirectRunner', allowed_lateness=600, **flags)
  opts.view_as(StandardOptions).streaming = True
  p = TestPipeline(options=opts)
  build(p, opts, source=p | late_data_stream())
  p.run().wait_until_finish()


def test_streaming_pipeline_late_pane_replaces_row_and_too_late_is_kept(
    tmp_path):
  db = str(tmp_path / 'w.duckdb')
  cold = str(tmp_path / 'cold')
  run_late_data_stream(hot_sink='duckdb:' + db, cold_path=cold)

  keys = query(db, 'SELECT user_id FROM events ORDER BY 1')
  assert keys == [('u1',), ('u2',), ('u3',), ('u4',)], 'the too-late event is stored'
  minute = query(db, 'SELECT event_count, pane_timing FROM event_counts_1m')
  assert minute == [(3, 'LATE')], 'the late pane replaced the on-time row'
  letters = query(db, 'SELECT error_kind, error_stage, raw FROM dead_letters')
  assert len(letters) == 1
  kind, stage, raw = letters[0]
  assert (kind, stage) == ('late_event', 'window') and '/too-late' in raw
  hourly = query(db, 'SELECT user_id, event_count FROM user_activity_hourly '
                 'ORDER BY 1')
  assert hourly == [('u1', 1), ('u2', 1), ('u3', 1), ('u4', 1)]
  files = glob.glob(os.path.join(cold, 'events', '*', '*', '*.parquet'))
  assert files and not glob.glob(os.path.join(cold, '**', '.tmp-*'), recursive=True)
  table = ds.dataset(os.path.join(cold, 'events'), format='parquet',
                     partitioning='hive').to_table()
  assert sorted(table.column('user_id').to_pylist()) == ['u1', 'u2', 'u3', 'u4']
