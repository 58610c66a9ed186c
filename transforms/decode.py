"""`DecodeAndValidate`: raw records in, events and dead letters out.

Each raw record (bytes, or a `RawRecord` with its origin) is checked in the
contract's order: blank (skipped and counted, not a record), `oversized`,
`malformed`, then the validation kinds. Valid events leave on the main output with
their `event_time` as the element timestamp; everything else leaves on the
`dead_letters` output with its original bytes. Only the errors the checks expect
are caught: anything else is a bug and fails the bundle, so the runner retries it
rather than losing the record.
"""
from typing import Optional, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from schemas.records import (DeadLetter, Event, MALFORMED, MAX_RECORD_BYTES,
                             OVERSIZED, RawRecord)
from schemas.registry import load_registry
from transforms import counters
from transforms.parsing import Malformed, is_blank, parse_record
from transforms.validate import validate

__all__ = ['decode_and_validate', 'as_raw_record', 'DecodeAndValidate',
           'DEAD_LETTERS']

DEAD_LETTERS = 'dead_letters'


def as_raw_record(element) -> RawRecord:
  """Accepts a RawRecord or bare bytes (a record injected without an origin)."""
  if isinstance(element, RawRecord):
    return element
  if isinstance(element, (bytes, bytearray, memoryview)):
    return RawRecord(bytes(element))
  raise TypeError('a raw record must be bytes, got %s' % type(element).__name__)


def decode_and_validate(
    record: RawRecord, registry=None
) -> Tuple[Optional[Union[Event, DeadLetter]], int]:
  """Returns (Event, DeadLetter or None for a blank line, unknown field count)."""
  result, unknown = _decode_and_validate(record, registry or load_registry())
  if record.attributes and isinstance(result, DeadLetter):
    result = result._replace(attributes=record.attributes)
  return result, unknown


def _decode_and_validate(record, registry):
  data, origin = record.data, record.origin
  if is_blank(data):
    return None, 0
  if len(data) > MAX_RECORD_BYTES:
    return DeadLetter.of(
        OVERSIZED, 'record is %d bytes, the limit is %d' % (
            len(data), MAX_RECORD_BYTES), data, origin), 0
  try:
    obj = parse_record(data, registry)
  except Malformed as e:
    return DeadLetter.of(MALFORMED, str(e), data, origin), 0
  return validate(obj, data, origin, registry)


class _DecodeAndValidateFn(beam.DoFn):
  """Thin shell over `decode_and_validate` that routes and counts."""

  def __init__(self, registry_path=None):
    self._registry_path = registry_path

  def setup(self):
    self._registry = load_registry(self._registry_path)
    self._input = Metrics.counter(counters.NAMESPACE, counters.INPUT_RECORDS)
    self._blank = Metrics.counter(counters.NAMESPACE, counters.BLANK_LINES)
    self._unknown = Metrics.counter(counters.NAMESPACE, counters.UNKNOWN_FIELDS)
    self._valid = Metrics.counter(counters.NAMESPACE, counters.VALID_EVENTS)

  def process(self, element):
    result, unknown = decode_and_validate(as_raw_record(element), self._registry)
    if result is None:
      self._blank.inc()
      return
    self._input.inc()
    if isinstance(result, DeadLetter):
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, result)
      return
    self._valid.inc()
    if unknown:
      self._unknown.inc(unknown)
    yield beam.window.TimestampedValue(
        result, Timestamp.from_utc_datetime(result.event_time))


class DecodeAndValidate(beam.PTransform):
  """Raw records to typed events (main output) and dead letters (`dead_letters`).

  The output is a `DoOutputsTuple`: `result.events` and `result.dead_letters`.

  Args:
    registry_path: the schema registry (`registry.json`) whose version gates
      and schemas apply (default: the shipped one).
  """

  def __init__(self, registry_path=None):
    super().__init__()
    self._registry_path = registry_path

  def expand(self, raw_records):
    outputs = (
        raw_records
        | 'DecodeValidate' >> beam.ParDo(
            _DecodeAndValidateFn(self._registry_path)).with_outputs(
            DEAD_LETTERS, main='events'))
    return outputs
