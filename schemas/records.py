"""Typed records the pipeline passes between steps.

One record per shape (style practice 2): `Event` is a validated, normalised event;
`DeadLetter` is a record that could not become an event (or, for `late_event`, an
event that missed a view). The warehouse and Arrow schemas in `tables.py` are
derived from these field lists, and a test keeps them in step.
"""
import datetime
from typing import NamedTuple, Optional

__all__ = [
    'Event', 'DeadLetter', 'RawRecord', 'ERROR_KINDS', 'ERROR_STAGES',
    'OVERSIZED', 'MALFORMED', 'UNSUPPORTED_SCHEMA_VERSION', 'UNKNOWN_EVENT_TYPE',
    'SCHEMA_VIOLATION', 'LATE_EVENT', 'ENRICHMENT_FAILED', 'SINK_FAILED',
    'UNKNOWN', 'MAX_RECORD_BYTES',
]

# Dead-letter kinds, in the order the checks run (contract section 2).
OVERSIZED = 'oversized'
MALFORMED = 'malformed'
UNSUPPORTED_SCHEMA_VERSION = 'unsupported_schema_version'
UNKNOWN_EVENT_TYPE = 'unknown_event_type'
SCHEMA_VIOLATION = 'schema_violation'
LATE_EVENT = 'late_event'
ENRICHMENT_FAILED = 'enrichment_failed'
SINK_FAILED = 'sink_failed'

ERROR_STAGES = {
    OVERSIZED: 'decode',
    MALFORMED: 'decode',
    UNSUPPORTED_SCHEMA_VERSION: 'validate',
    UNKNOWN_EVENT_TYPE: 'validate',
    SCHEMA_VIOLATION: 'validate',
    LATE_EVENT: 'window',
    ENRICHMENT_FAILED: 'enrich',
    SINK_FAILED: 'sink',
}
ERROR_KINDS = tuple(ERROR_STAGES)

# A raw record larger than this many bytes is `oversized` (65,536 is allowed).
MAX_RECORD_BYTES = 65536

# Enrichment fallback for a user without a profile (contract section 3).
UNKNOWN = 'unknown'


class RawRecord(NamedTuple):
  """One input record: its exact bytes and where it came from.

  `origin` names the record's place in its source (`<file>:<line>` or
  `<file>#<index>` for files, `pubsub:<message id>`, `kafka:<topic>/<partition>/
  <offset>`) so that a rerun recognises the same record and its dead letter is
  not written twice. It is empty when a caller injects bare bytes.
  `attributes` are the message's attributes (Pub/Sub) or headers (Kafka), kept
  on the record's dead letter.
  """
  data: bytes
  origin: str = ''
  attributes: Optional[dict] = None

  def __reduce__(self):
    # Plain tuple arguments: cheaper than the NamedTuple protocol (see Event).
    return RawRecord, tuple(self)


class Event(NamedTuple):
  """A valid event, normalised: timestamps are aware UTC datetimes (microseconds).

  `payload` is the payload read with the newest reader schema of its major version,
  unknown fields dropped and defaults filled. `raw` and `origin` are kept so that a
  late event's dead letter can carry the original bytes. `missed_views` names
  the views the event came too late for (the late-data gate sets it, with
  `late_letter`, the event's `late_event` DeadLetter): those views never count
  it, and the letter is written only if the event is stored.
  """
  idempotency_key: str
  trace_id: str
  schema_version: str
  event_type: str
  source: str
  tenant_id: str
  user_id: str
  event_time: datetime.datetime
  ingested_at: datetime.datetime
  payload: dict
  raw: bytes = b''
  origin: str = ''
  user_tier: str = UNKNOWN
  user_region: str = UNKNOWN
  missed_views: tuple = ()
  late_letter: Optional['DeadLetter'] = None

  def __reduce__(self):
    # Plain tuple arguments: pickles several times faster than the default
    # NamedTuple protocol (which goes through copyreg for every event).
    return Event, tuple(self)


class DeadLetter(NamedTuple):
  """A record that ends in the dead-letter table, with its original bytes.

  `idempotency_key` and `tenant_id` are filled where they could be read from the
  record, so operators can find and replay a tenant's failures.
  """
  error_kind: str
  error_stage: str
  error_message: str
  raw: bytes
  origin: str = ''
  idempotency_key: Optional[str] = None
  tenant_id: Optional[str] = None
  replay_count: int = 0
  attributes: Optional[dict] = None

  @classmethod
  def of(cls, kind, message, raw, origin='', idempotency_key=None,
         tenant_id=None, replay_count=0):
    """Builds a dead letter whose stage follows from its kind."""
    return cls(kind, ERROR_STAGES[kind], message, raw, origin,
               idempotency_key, tenant_id, replay_count)
