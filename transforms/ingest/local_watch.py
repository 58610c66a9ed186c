"""A live folder watch for the local streaming runner.

Beam's `fileio.MatchContinuously` is what `--input_watch` uses on Dataflow and
Flink, but neither local runner available offline can run it live (FnApiRunner
has no processing-time triggers and finishes a stage only after its source ends;
BundleBasedDirectRunner cannot run the splittable DoFn under it). Locally,
`--input_watch` therefore feeds a TestStream from a `TestStreamServiceController`
(Beam's gRPC test-stream service) whose reader polls the pattern:

* each new file's records arrive as elements (or, with a batch size, as `Batch`es
  of records), stamped with the time they were read;
* then the watermark advances to the wall clock, and processing time by the poll
  interval (which fires the sinks' commit triggers).

So the watermark follows processing time, as with `MatchContinuously`: an event
is late when its `event_time` is behind the wall clock by more than its window
plus the allowed lateness. A file is read once, when it is first seen; write a
file under another name and rename it into the folder, so it is complete when
seen.
"""
import glob
import time

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.testing.test_stream import (ElementEvent, ProcessingTimeEvent,
                                             TestStream, WatermarkEvent)
from apache_beam.testing.test_stream_service import TestStreamServiceController
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Duration, Timestamp

from schemas.registry import load_registry
from transforms.batch import Batch
from transforms.ingest.sources import read_file_records

__all__ = ['LocalFileWatch', 'watch_events']

_CHUNK = 2000
_CODER = PickleCoder()


# Beam 2.77's test-stream protocol writes times in milliseconds but the direct
# runner reads them back as microseconds (`test_stream_payload_to_events`), so
# every time sent is scaled up by 1000 to arrive as meant.
_WIRE_SCALE = 1000


def _wire_time(seconds):
  """A timestamp (seconds) as the direct runner will read it back."""
  return Timestamp(micros=int(seconds * 1000000) * _WIRE_SCALE)


def _wire_duration(seconds):
  return Duration(micros=int(seconds * 1000000) * _WIRE_SCALE)


def _chunks(records, size):
  chunk = []
  for record in records:
    chunk.append(record)
    if len(chunk) >= size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def watch_events(pattern, interval_s, duration_s=None, clock=time.time,
                 sleep=time.sleep, registry_path=None, batch_size=None):
  """Yields TestStream events for the files matching `pattern`, polling:
  each record an element, or with `batch_size` each `Batch` of at most that
  many records."""
  registry = load_registry(registry_path)
  seen = set()
  started = clock()
  while True:
    for path in sorted(glob.glob(pattern)):
      if path in seen:
        continue
      seen.add(path)
      now = _wire_time(clock())
      with open(path, 'rb') as stream:
        records = read_file_records(stream, path, registry)
        if batch_size:
          for chunk in _chunks(records, batch_size):
            yield ElementEvent([beam.window.TimestampedValue(Batch(chunk), now)])
        else:
          for chunk in _chunks(records, _CHUNK):
            yield ElementEvent([beam.window.TimestampedValue(record, now)
                                for record in chunk])
    yield WatermarkEvent(_wire_time(clock()))
    if duration_s and clock() - started >= duration_s:
      yield WatermarkEvent(Timestamp(micros=MAX_TIMESTAMP.micros * _WIRE_SCALE))
      return
    sleep(interval_s)
    yield ProcessingTimeEvent(_wire_duration(interval_s))


class _Reader(object):
  """The reader interface `TestStreamServiceController` expects."""

  def __init__(self, pattern, interval_s, duration_s, registry_path,
               batch_size):
    self._args = (pattern, interval_s, duration_s)
    self._registry_path, self._batch_size = registry_path, batch_size

  def read_multiple(self, unused_tags):
    for event in watch_events(*self._args, registry_path=self._registry_path,
                              batch_size=self._batch_size):
      yield event.to_runner_api(_CODER)


class LocalFileWatch(beam.PTransform):
  """Streaming, local: RawRecords of files appearing under `pattern`, live.

  Args:
    pattern: a local file pattern (glob).
    interval_s: seconds between looks.
    duration_s: stop after this many seconds (None: until the job is killed).
    registry_path: the schema registry that frames Avro container records.
    batch_size: records per element, as `Batch`es; None:
      one record per element.
  """

  def __init__(self, pattern, interval_s=2.0, duration_s=None,
               registry_path=None, batch_size=None):
    super().__init__()
    self._batch_size = batch_size
    self._controller = TestStreamServiceController(
        _Reader(pattern, interval_s, duration_s, registry_path, batch_size))
    self._controller.start()

  def expand(self, pbegin):
    watched = pbegin | 'Watch' >> TestStream(
        coder=_CODER, endpoint=self._controller.endpoint)
    if self._batch_size:
      watched.element_type = Batch
    return watched
