"""File sources: JSON lines and Avro container files to `RawRecord`s.

A record is one line's bytes without its `\\n` (a last line without a newline is a
record; a `\\r` stays part of the record). Blank lines are passed on, so that
`DecodeAndValidate` counts them in one place whatever the source. Avro container
records are re-framed in the Confluent wire format with their registered schema
id, so one decoder reads both and a dead letter keeps replayable bytes.
"""
import io
import os

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from schemas.records import RawRecord
from schemas.registry import load_registry
from transforms.ingest.parsing import frame_wire

__all__ = ['ReadRecords', 'WatchRecords', 'read_file_records',
           'UNREGISTERED_SCHEMA_ID']

# Wire id for Avro container records whose writer schema is not registered:
# the decoder reports them `malformed`, naming the reason.
UNREGISTERED_SCHEMA_ID = 0
_AVRO_MAGIC = b'Obj\x01'


def _origin_path(path):
  return os.path.abspath(path) if '://' not in path else path


def _avro_records(stream, origin_path, registry):
  reader = fastavro.reader(stream)
  schema_id = registry.wire_id_for_schema(reader.writer_schema)
  schema = reader.writer_schema
  for index, record in enumerate(reader):
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    yield RawRecord(
        frame_wire(schema_id or UNREGISTERED_SCHEMA_ID, body.getvalue()),
        '%s#%d' % (origin_path, index))


def read_file_records(stream, path, registry=None):
  """Yields the RawRecords of one open binary file (JSON lines or Avro)."""
  registry = registry or load_registry()
  origin_path = _origin_path(path)
  head = stream.read(4)
  stream.seek(0)
  if head == _AVRO_MAGIC:
    yield from _avro_records(stream, origin_path, registry)
    return
  # Line by line, so a large file is never held in memory whole.
  for number, line in enumerate(iter(stream.readline, b''), 1):
    yield RawRecord(line[:-1] if line.endswith(b'\n') else line,
                    '%s:%d' % (origin_path, number))


class _ReadFileFn(beam.DoFn):

  def __init__(self, registry_path=None):
    self._registry_path = registry_path

  def setup(self):
    self._registry = load_registry(self._registry_path)

  def process(self, readable_file):
    with readable_file.open() as stream:
      yield from read_file_records(
          stream, readable_file.metadata.path, self._registry)


class ReadRecords(beam.PTransform):
  """Reads every file matching `pattern` (local, gs:// or s3://) as RawRecords.

  Args:
    pattern: a file pattern Beam's FileSystems understands. Files ending in a
      compression suffix (`.gz`, `.bz2`, ...) are decompressed.
    registry_path: the schema registry that frames Avro container records
      (default: the shipped one).
  """

  def __init__(self, pattern, registry_path=None):
    super().__init__()
    self._pattern = pattern
    self._registry_path = registry_path

  def expand(self, pbegin):
    return (
        pbegin
        | 'MatchFiles' >> fileio.MatchFiles(self._pattern)
        # Spread files over workers before reading (otherwise one worker reads all).
        | 'SpreadFiles' >> beam.Reshuffle()
        | 'OpenFiles' >> fileio.ReadMatches()
        | 'SplitRecords' >> beam.ParDo(_ReadFileFn(self._registry_path)))


class WatchRecords(beam.PTransform):
  """Streaming: watches `pattern` for new files and reads each once.

  The source's watermark follows processing time (the time files are matched),
  so an event is late when its event_time is behind the wall clock by more than
  its window's size plus the allowed lateness.

  Args:
    pattern: a file pattern Beam's FileSystems understands.
    interval_s: seconds between looks.
    duration_s: stop watching after this many seconds (None: never).
    registry_path: as for `ReadRecords`.
  """

  def __init__(self, pattern, interval_s=2.0, duration_s=None,
               registry_path=None):
    super().__init__()
    self._pattern, self._interval_s = pattern, interval_s
    self._duration_s = duration_s
    self._registry_path = registry_path

  def expand(self, pbegin):
    now = Timestamp.now()
    stop = now + self._duration_s if self._duration_s else MAX_TIMESTAMP
    return (
        pbegin
        | 'MatchContinuously' >> fileio.MatchContinuously(
            self._pattern, interval=self._interval_s, start_timestamp=now,
            stop_timestamp=stop)
        | 'OpenFiles' >> fileio.ReadMatches()
        | 'SplitRecords' >> beam.ParDo(_ReadFileFn(self._registry_path)))
