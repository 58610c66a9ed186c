"""Typed records to warehouse rows (plain dicts keyed by the table's columns)."""
import base64
import datetime
import hashlib
import json

import orjson
import pyarrow as pa

from schemas import tables
from schemas.masking import mask_record, mask_text
from schemas.records import DeadLetter, Event

__all__ = ['event_row', 'events_table', 'EVENT_BATCH_SCHEMA', 'staged_columns',
           'late_letter_row_json', 'table_rows', 'dead_letter_row', 'raw_text', 'raw_bytes',
           'dead_letter_id', 'REPLAY_ORIGIN']

# The origin of a record sent back by the replay job: `replay:<dead_letter_id>`.
# A replayed record that fails again keeps the id of the letter it came from, so
# the sink raises that letter's replay_count instead of adding a second letter.
REPLAY_ORIGIN = 'replay:'


def raw_text(raw: bytes):
  """The raw record as text where it is UTF-8, else base64: (text, encoding)."""
  try:
    return raw.decode('utf-8'), 'utf-8'
  except UnicodeDecodeError:
    return base64.b64encode(raw).decode('ascii'), 'base64'


def raw_bytes(text: str, encoding: str) -> bytes:
  """The original bytes of a `dead_letters.raw` value (the inverse of raw_text)."""
  if encoding == 'base64':
    return base64.b64decode(text)
  return text.encode('utf-8')


def dead_letter_id(kind: str, origin: str, raw: bytes) -> str:
  """A stable id, so that a rerun or a retried bundle does not double a letter.

  Two identical bad lines at different places are two letters (their origins
  differ); the same line read again is the same letter; a replayed record keeps
  the id of the letter it was replayed from.
  """
  if origin.startswith(REPLAY_ORIGIN):
    return origin[len(REPLAY_ORIGIN):]
  digest = hashlib.sha256()
  for part in (kind.encode(), origin.encode('utf-8', 'surrogatepass'), raw):
    digest.update(b'%d:' % len(part))
    digest.update(part)
  return digest.hexdigest()


def event_row(event: Event, processed_at: datetime.datetime,
              mask_fields=()) -> dict:
  """The staged `events` row of an event (payload as JSON text, keys in the
  order of `tables.STAGED_EVENTS`: the `events` columns, then its late letter
  as JSON text or None)."""
  return {
      'idempotency_key': event.idempotency_key,
      'trace_id': event.trace_id,
      'schema_version': event.schema_version,
      'event_type': event.event_type,
      'source': event.source,
      'tenant_id': event.tenant_id,
      'user_id': event.user_id,
      'event_time': event.event_time,
      'ingested_at': event.ingested_at,
      'processed_at': processed_at,
      'user_tier': event.user_tier,
      'user_region': event.user_region,
      'payload': _payload_json(event.payload),
      'missed_views': list(event.missed_views),
      'late_letter': late_letter_json(event, processed_at, mask_fields),
  }


def late_letter_json(event: Event, failed_at: datetime.datetime,
                     mask_fields=()):
  """The `dead_letters` row of an event's late letter as JSON text (the
  commit writes it with the event, see `tables.STAGED_EVENTS`), or None."""
  if event.late_letter is None:
    return None
  return late_letter_row_json(event.late_letter, failed_at, mask_fields)


def _payload_json(payload) -> str:
  """The payload as compact JSON text, non-ASCII kept as it is.

  orjson writes strings, integers, booleans and null exactly as `json.dumps`
  does with these settings (a test compares them) in a tenth of the time;
  floats (whose shortest forms the two may write differently), nested values
  and anything orjson refuses go through `json.dumps`.
  """
  for value in payload.values():
    if type(value) not in _ORJSON_SAFE:
      return json.dumps(payload, ensure_ascii=False, separators=(',', ':'))
  try:
    return orjson.dumps(payload).decode('utf-8')
  except orjson.JSONEncodeError:
    return json.dumps(payload, ensure_ascii=False, separators=(',', ':'))


_ORJSON_SAFE = frozenset((str, int, bool, type(None)))

# Event fields copied to the `events` table as they are, by position.
_COPIED = ('idempotency_key', 'trace_id', 'schema_version', 'event_type',
           'source', 'tenant_id', 'user_id', 'event_time', 'ingested_at',
           'user_tier', 'user_region')
_POSITION = {name: i for i, name in enumerate(Event._fields)}


# Events in flight between the stages, one Arrow table per batch: the staged
# `events` columns, then each event's record as it came (`raw`) and where it
# came from (`origin`), which a dead letter made after decoding (late,
# enrichment failed, refused by BigQuery) carries. The sinks stage only the
# staged columns (`staged_columns`).
EVENT_BATCH_SCHEMA = tables.arrow_schema(tables.STAGED_EVENTS).append(
    pa.field('raw', pa.binary(), nullable=False)).append(
        pa.field('origin', pa.string(), nullable=False))
STAGED_NAMES = tuple(tables.STAGED_EVENTS.column_names)


def staged_columns(table: pa.Table) -> pa.Table:
  """An events batch's staged columns (`tables.STAGED_EVENTS`)."""
  if table.num_columns == len(STAGED_NAMES):
    return table
  return table.select(list(STAGED_NAMES))


def events_table(events, processed_at: datetime.datetime,
                 mask_fields=(), with_source=False) -> pa.Table:
  """The staged `events` rows of many events as one Arrow table; with
  `with_source`, an events batch in flight (`EVENT_BATCH_SCHEMA`: with each
  event's `raw` and `origin`).

  The same values as `event_row` per event (a test compares them), built
  column by column: no dict per row and one conversion to Arrow, which the
  staging file then takes.
  """
  events = list(events)
  schema = EVENT_BATCH_SCHEMA if with_source else tables.arrow_schema(
      tables.STAGED_EVENTS)
  fields = list(zip(*events)) if events else [()] * len(Event._fields)
  columns = {name: fields[_POSITION[name]] for name in _COPIED}
  columns['processed_at'] = [processed_at] * len(events)
  columns['payload'] = [_payload_json(p) for p in fields[_POSITION['payload']]]
  columns['missed_views'] = [list(m) for m in fields[_POSITION['missed_views']]]
  columns['late_letter'] = [
      None if e.late_letter is None else
      late_letter_json(e, processed_at, mask_fields) for e in events]
  columns['raw'] = fields[_POSITION['raw']]
  columns['origin'] = fields[_POSITION['origin']]
  return pa.Table.from_arrays(
      [pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


def table_rows(table: pa.Table, processed_at: datetime.datetime):
  """An events batch as staged `events` row dicts (`event_row`'s), each with
  its record's bytes and origin as `_raw` and `_origin`."""
  rows = staged_columns(table).to_pylist()
  raws = table.column('raw').to_pylist()
  origins = table.column('origin').to_pylist()
  for row, raw, origin in zip(rows, raws, origins):
    row['processed_at'] = processed_at
    row['_raw'], row['_origin'] = raw, origin
  return rows


def late_letter_row_json(letter: DeadLetter, failed_at: datetime.datetime,
                         mask_fields=()) -> str:
  """A late letter as the JSON text `tables.STAGED_EVENTS.late_letter` holds."""
  row = dead_letter_row(letter, failed_at, mask_fields)
  row['failed_at'] = failed_at.astimezone(datetime.timezone.utc).isoformat()
  return json.dumps(row, sort_keys=True)


def dead_letter_row(letter: DeadLetter, failed_at: datetime.datetime,
                    mask_fields=()) -> dict:
  """The `dead_letters` row of a dead letter; with `mask_fields` (parsed by
  `schemas.masking.parse_fields`) the named fields are masked (PII)."""
  text, encoding = raw_text(letter.raw)
  message = letter.error_message
  if mask_fields:
    masked, values, readable = mask_record(letter.raw, mask_fields)
    text = masked.decode('utf-8')
    encoding = 'masked-utf-8' if readable else 'masked-sha256'
    message = mask_text(message, values)
  return {
      'dead_letter_id': dead_letter_id(letter.error_kind, letter.origin, letter.raw),
      'error_kind': letter.error_kind,
      'error_stage': letter.error_stage,
      'error_message': message,
      'raw': text,
      'raw_encoding': encoding,
      'idempotency_key': letter.idempotency_key,
      'tenant_id': letter.tenant_id,
      'origin': letter.origin,
      'failed_at': failed_at,
      'replay_count': letter.replay_count,
      'replayed_at': None,
      'attributes': (json.dumps(letter.attributes, sort_keys=True)
                     if letter.attributes else None),
  }
