"""Envelopes exactly as contract section 1 says, refused before they are sent.

The idempotency key is derived from the business fact, never from a random id or
the wall clock: `sha256_hex(f"{source}:{event_type}:{business_id}:{event_time}")`
with `event_time` the string as sent. A retry of the same fact therefore carries
the same key (and a new `trace_id`), and the pipeline drops it as a duplicate.
"""
import datetime
import uuid

from schemas.keys import business_id, idempotency_key
from schemas.records import DeadLetter
from schemas.registry import load_registry
from transforms.ingest.timestamps import format_utc
from transforms.ingest.validate import validate

__all__ = ['ContractError', 'build_event', 'event_time_text', 'check_event']


class ContractError(ValueError):
  """The event breaks the contract; `kind` is the dead-letter kind the pipeline
  would give it and the message names the field."""

  def __init__(self, kind, message):
    super().__init__(message)
    self.kind = kind


def event_time_text(value) -> str:
  """A timestamp as sent: RFC 3339 text kept as given, a datetime as UTC `Z`
  (whole seconds without a fraction, so the text and the key are stable)."""
  if isinstance(value, str):
    return value
  if value.tzinfo is None:
    raise ContractError('schema_violation',
                        'event_time: a datetime without a zone is ambiguous')
  text = format_utc(value)
  return text.replace('.000000Z', 'Z')


def check_event(event: dict, registry=None) -> dict:
  """Raises ContractError unless the pipeline would accept `event` as it is."""
  registry = registry or load_registry()
  result, _ = validate(event, b'', 'producer', registry)
  if isinstance(result, DeadLetter):
    raise ContractError(result.error_kind, result.error_message)
  return event


def build_event(event_type: str, payload: dict, *, tenant_id: str, source: str,
                event_time, ingested_at=None, schema_version=None, trace_id=None,
                registry=None) -> dict:
  """A checked envelope (a dict) for one business fact.

  Args:
    event_type, payload: the fact; the payload in `schema_version`'s shape.
    tenant_id, source: who it belongs to and which system produced it.
    event_time: when it happened (RFC 3339 text or an aware datetime).
    ingested_at: when it is handed over (default: now).
    schema_version: default: the type's newest registered version.
    trace_id: default: a new random id (it identifies this attempt only).
    registry: default: the shipped registry.

  Raises:
    ContractError: naming the field, if the pipeline would not accept it.
  """
  registry = registry or load_registry()
  if not registry.is_registered_type(event_type):
    raise ContractError('unknown_event_type',
                        'event_type %r is not registered' % event_type)
  version = schema_version or registry.versions(event_type)[-1]
  sent_time = event_time_text(event_time)
  if ingested_at is None:
    ingested_at = datetime.datetime.now(datetime.timezone.utc)
  try:
    fact = business_id(event_type, payload, registry)
  except KeyError as e:
    raise ContractError('schema_violation', 'payload.%s: missing' % e.args[0])
  event = {
      'trace_id': trace_id or 't-' + uuid.uuid4().hex,
      'idempotency_key': idempotency_key(source, event_type, fact, sent_time),
      'schema_version': version,
      'event_type': event_type,
      'source': source,
      'tenant_id': tenant_id,
      'event_time': sent_time,
      'ingested_at': event_time_text(ingested_at),
      'payload': payload,
  }
  return check_event(event, registry)
