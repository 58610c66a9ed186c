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
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from schemas.records import DeadLetter
from schemas.registry import load_registry
from schemas.upcasters import is_inexact
from transforms import counters
from transforms.decoding import as_raw_record, decode_and_validate

__all__ = ['decode_and_validate', 'as_raw_record', 'DecodeAndValidate',
           'DEAD_LETTERS']

DEAD_LETTERS = 'dead_letters'


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
    self._inexact = Metrics.counter(counters.NAMESPACE,
                                    counters.UPCAST_INEXACT)

  def process(self, element, timestamp=beam.DoFn.TimestampParam):
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
    if is_inexact(result.event_type, result.payload):
      self._inexact.inc()
    # The later of its event time and its arrival (the source's timestamp,
    # which the watermark follows): dedup keeps a key for the TTL from
    # there, so an old event arriving through a stream is deduplicated too.
    yield beam.window.TimestampedValue(result, max(
        Timestamp.from_utc_datetime(result.event_time), timestamp))


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
