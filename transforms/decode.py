"""`DecodeAndValidate`: raw records in, events and dead letters out.

Each raw record (bytes, or a `RawRecord` with its origin) is checked in the
contract's order: blank (skipped and counted, not a record), `oversized`,
`malformed`, then the validation kinds. Valid events leave on the main output with
the later of their `event_time` and the record's arrival (its timestamp at the
source) as the element timestamp; everything else leaves on the
`dead_letters` output with its original bytes. Only the errors the checks expect
are caught: anything else is a bug and fails the bundle, so the runner retries it
rather than losing the record. The checks themselves are Beam-free, in
`decoding.py`.
"""
import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from schemas.records import DeadLetter
from schemas.registry import load_registry
from schemas.upcasters import is_inexact
from transforms import counters
from transforms.decoding import as_raw_record, decode_and_validate
from transforms.tallies import TALLIES, Tally

__all__ = ['decode_and_validate', 'as_raw_record', 'DecodeAndValidate',
           'DEAD_LETTERS']

DEAD_LETTERS = 'dead_letters'


class _DecodeAndValidateFn(beam.DoFn):
  """Thin shell over `decode_and_validate` that routes and counts."""

  def __init__(self, registry_path=None):
    self._registry_path = registry_path

  def setup(self):
    self._registry = load_registry(self._registry_path)
    self._tally = Tally()

  def process(self, element, timestamp=beam.DoFn.TimestampParam):
    result, unknown = decode_and_validate(as_raw_record(element), self._registry)
    if result is None:
      self._tally.inc(counters.BLANK_LINES)
      return
    self._tally.inc(counters.INPUT_RECORDS)
    if isinstance(result, DeadLetter):
      yield beam.pvalue.TaggedOutput(DEAD_LETTERS, result)
      return
    self._tally.inc(counters.VALID_EVENTS)
    self._tally.inc(counters.UNKNOWN_FIELDS, unknown)
    self._tally.inc(counters.UPCAST_INEXACT,
                    int(is_inexact(result.event_type, result.payload)))
    # The later of its event time and its arrival (the source's timestamp,
    # which the watermark follows): dedup keeps a key for the TTL from
    # there, so an old event arriving through a stream is deduplicated too.
    yield beam.window.TimestampedValue(result, max(
        Timestamp.from_utc_datetime(result.event_time), timestamp))

  def finish_bundle(self):
    yield from self._tally.emit()


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
            DEAD_LETTERS, TALLIES, main='events'))
    return outputs
