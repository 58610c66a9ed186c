"""Dedup by idempotency key in a stream (TestStream on BundleBasedDirectRunner):
the TTL, through the sharded `DedupBatches` every runner runs."""
import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import RawRecord
from tests.helpers import as_json, envelope, options
from transforms.ingest.decode import decode_and_validate
from schemas.rows import events_table
from transforms.ingest.decoding import NOT_PROCESSED
from transforms.dedup.shards import DedupBatches

T0 = 1709287200  # 2024-03-01T10:00:00Z, the helpers' event_time


def _event(trace_id, **overrides):
  return decode_and_validate(RawRecord(as_json(envelope(trace_id=trace_id,
                                                        **overrides))))[0]


def _at(event, seconds):
  """A one-event batch arriving at `seconds`."""
  return beam.window.TimestampedValue(
      events_table([event], NOT_PROCESSED, with_source=True), seconds)


def _trace_ids(table):
  return table.column('trace_id').to_pylist()


def _dedup(ttl):
  return DedupBatches(ttl, streaming=True, shards=4)


def _streaming_options():
  opts = options(runner='BundleBasedDirectRunner')
  opts.view_as(StandardOptions).streaming = True
  return opts


def test_retry_within_ttl_dropped_after_ttl_treated_as_new():
  first, retry, after_ttl = _event('t-1'), _event('t-2'), _event('t-3')
  other = _event('t-4', payload__url='/other')
  ttl = 3600
  stream = (TestStream()
            .advance_watermark_to(T0 - 10)
            .add_elements([_at(first, T0)])
            .add_elements([_at(retry, T0),
                           _at(other, T0)])
            # The watermark passes event_time + TTL: the key's state expires.
            .advance_watermark_to(T0 + ttl + 1)
            .add_elements([_at(after_ttl, T0)])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming_options()) as p:
    kept = (p | stream | _dedup(ttl)).events | beam.FlatMap(_trace_ids)
    assert_that(kept,
                equal_to(['t-1', 't-4', 't-3']))


def test_retry_long_after_first_copy_within_ttl_is_dropped():
  stream = (TestStream()
            .add_elements([_at(_event('t-1'), T0)])
            .advance_watermark_to(T0 + 86399)
            .add_elements([_at(_event('t-2'), T0)])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming_options()) as p:
    kept = (p | stream | _dedup(86400)).events | beam.FlatMap(
        _trace_ids)
    assert_that(kept, equal_to(['t-1']))


class FakeState(object):
  """A state cell for calling a stateful DoFn's methods alone."""

  def __init__(self):
    self.value = None

  def read(self):
    return self.value

  def write(self, value):
    self.value = value

  def clear(self):
    self.value = None


class FakeTimer(object):
  def __init__(self):
    self.at = None

  def set(self, timestamp):
    self.at = timestamp
