"""Raw records to events and dead letters: the pure functions, without Beam.

`decode_and_validate` runs the contract's checks on one record (blank,
`oversized`, `malformed`, then `validate`); `decode_records` on a batch,
with its counts; `decode_table` the same with the events as one Arrow
table, the task the decode helper process runs (`parallel_decode.py`).
Nothing here needs the SDK, so every caller (the decode step, its helper
process, the replay job, the plain job of the throughput benchmark) runs the
same code.
"""
import datetime
from typing import List, NamedTuple, Optional, Tuple, Union

import pyarrow as pa

from schemas.records import (DeadLetter, Event, MALFORMED, MAX_RECORD_BYTES,
                             OVERSIZED, RawRecord)
from schemas.registry import load_registry
from schemas.rows import events_table
from schemas.upcasters import is_inexact
from transforms.ingest.parsing import Malformed, is_blank, parse_record
from transforms.ingest.validate import validate

__all__ = ['as_raw_record', 'decode_and_validate', 'Decoded', 'decode_records',
           'decode_table']


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


class Decoded(NamedTuple):
  """One batch decoded: its events (a list, or an `events` Arrow table), its
  dead letters and the counts the decode step reports."""
  events: Union[List[Event], pa.Table]
  letters: List[DeadLetter]
  blank: int
  unknown_fields: int
  inexact_amounts: int = 0


def decode_records(records, registry) -> Decoded:
  """Decodes a batch of raw records (RawRecords or bytes) in order."""
  events, letters, blank, unknown_total, inexact = [], [], 0, 0, 0
  for record in records:
    result, unknown = decode_and_validate(as_raw_record(record), registry)
    if result is None:
      blank += 1
    elif isinstance(result, DeadLetter):
      letters.append(result)
    else:
      events.append(result)
      unknown_total += unknown
      inexact += is_inexact(result.event_type, result.payload)
  return Decoded(events, letters, blank, unknown_total, inexact)


# The `processed_at` of a table `decode_table` makes, replaced when the rows are
# made (`batched_tables.with_processed_at`).
NOT_PROCESSED = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def decode_table(records, registry_path: Optional[str] = None) -> Decoded:
  """`decode_records` with the events as one events batch (an Arrow table,
  `schemas.rows.EVENT_BATCH_SCHEMA`): not yet enriched (tier and region
  `unknown`), `processed_at` NOT_PROCESSED. The helper process's task: a
  table crosses processes as a few buffers, where events would be pickled
  and rebuilt one object at a time."""
  decoded = decode_records(records, load_registry(registry_path))
  return decoded._replace(events=events_table(decoded.events, NOT_PROCESSED,
                                              with_source=True))
