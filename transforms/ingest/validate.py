"""A decoded object to an `Event` or a `DeadLetter`: the checks of the contract.

Pure functions, no Beam. The checks run in the contract's order and the first that
fails names the dead letter's kind: `unsupported_schema_version` (the registry's
per-type allow-list), then
`unknown_event_type`, then `schema_violation` for everything else. Field rules
come from the registry's Avro schemas (`schemas/avro/*.avsc`), not from code.
A payload of an older major is upcast to the type's newest major (an upcaster
that cannot lift it exactly makes it a `schema_violation`).
"""
import datetime
import math
import re
from typing import Tuple, Union

from schemas.records import (Event, DeadLetter, SCHEMA_VIOLATION,
                             UNKNOWN_EVENT_TYPE, UNSUPPORTED_SCHEMA_VERSION)
from schemas.registry import parse_version
from transforms.ingest.parsing import NotFinite
from transforms.ingest.timestamps import parse_rfc3339

__all__ = ['validate', 'check_value', 'Violation', 'CLOCK_SKEW']

CLOCK_SKEW = datetime.timedelta(seconds=300)
_INT64 = (-2 ** 63, 2 ** 63 - 1)
_PATTERNS = {}


class Violation(ValueError):
  """A field breaks its rule; the message names the field."""


def _pattern(pattern):
  if pattern not in _PATTERNS:
    _PATTERNS[pattern] = re.compile(pattern)
  return _PATTERNS[pattern]


def _type_name(value):
  if value is None:
    return 'null'
  if isinstance(value, NotFinite):
    return 'a number too large for a 64-bit float'
  return {bool: 'boolean', int: 'integer', float: 'number', str: 'string',
          dict: 'object', list: 'array'}.get(type(value), type(value).__name__)


def check_value(spec, value, path, times=None):
  """Raises Violation unless `value` meets `spec`; returns the normalised value.

  A timestamp field's parsed datetime is put in `times` (by field name), so
  it is parsed once.
  """
  if value is None:
    if spec.nullable:
      return None
    raise Violation('%s: must not be null' % path)
  kind = spec.avro_type
  if kind == 'string':
    if not isinstance(value, str):
      raise Violation('%s: expected a string, got %s' % (path, _type_name(value)))
    if spec.min_length is not None and len(value) < spec.min_length:
      raise Violation('%s: shorter than %d characters' % (path, spec.min_length))
    if spec.max_length is not None and len(value) > spec.max_length:
      raise Violation('%s: longer than %d characters' % (path, spec.max_length))
    if spec.pattern is not None and not _pattern(spec.pattern).fullmatch(value):
      raise Violation('%s: does not match %s' % (path, spec.pattern))
    if spec.fmt == 'rfc3339':
      parsed = parse_rfc3339(value)
      if parsed is None:
        raise Violation('%s: not an RFC 3339 timestamp with a zone' % path)
      if times is not None:
        times[spec.name] = parsed
    return value
  if kind == 'long':
    if type(value) is not int or not _INT64[0] <= value <= _INT64[1]:
      raise Violation('%s: expected a 64-bit integer, got %s' % (
          path, _type_name(value)))
  elif kind == 'double':
    if type(value) not in (int, float):
      raise Violation('%s: expected a number, got %s' % (path, _type_name(value)))
    try:
      finite = math.isfinite(float(value))
    except OverflowError:
      finite = False
    if not finite:
      raise Violation('%s: expected a finite number' % path)
  else:
    raise Violation('%s: unsupported schema type %s' % (path, kind))
  if spec.minimum is not None and value < spec.minimum:
    raise Violation('%s: must be >= %s' % (path, spec.minimum))
  return value


def _fast_check(spec, path):
  """`check_value` for one field, with the common valid case done inline.

  Anything the inline test does not pass (a wrong type, a bound, a timestamp)
  goes to `check_value`, so results and messages are the same; per record this
  halves the cost of validation.
  """
  kind, minimum = spec.avro_type, spec.minimum
  low = spec.min_length or 0  # string lengths
  high = spec.max_length if spec.max_length is not None else float('inf')

  def slow(value, times):
    return check_value(spec, value, path, times)
  if kind == 'string' and spec.fmt is None:
    match = _pattern(spec.pattern).fullmatch if spec.pattern else None

    def check(value, times):
      if (type(value) is str and low <= len(value) <= high
          and (match is None or match(value))):
        return value
      return slow(value, times)
    return check
  if kind == 'string' and spec.fmt == 'rfc3339' and spec.pattern is None:
    name = spec.name

    def check(value, times):
      if type(value) is str and low <= len(value) <= high:
        parsed = parse_rfc3339(value)
        if parsed is not None:
          if times is not None:
            times[name] = parsed
          return value
      return slow(value, times)
    return check
  if kind == 'long':
    least = _INT64[0] if minimum is None else max(_INT64[0], minimum)

    def check(value, times):
      if type(value) is int and least <= value <= _INT64[1]:
        return value
      return slow(value, times)
    return check
  if kind == 'double':
    def check(value, times):
      if (type(value) is float and math.isfinite(value)
          and (minimum is None or value >= minimum)):
        return value
      return slow(value, times)
    return check
  return slow


class _FieldReader(object):
  """The compiled form of a tuple of field specs (built once per tuple)."""
  __slots__ = ('fields', 'known')

  def __init__(self, specs, prefix, also_known):
    self.fields = tuple(
        (spec.name, _fast_check(spec, prefix + spec.name), spec.required,
         spec.default, prefix + spec.name) for spec in specs)
    self.known = frozenset(s.name for s in specs).union(also_known)


_READERS = {}


def _field_reader(specs, prefix, also_known):
  """The compiled reader of a specs tuple (each registry's tuples are built
  once, so its readers are too); the cache is bounded for processes that load
  many registries."""
  key = (id(specs), prefix, also_known)
  reader = _READERS.get(key)
  if reader is None or reader[0] is not specs:
    if len(_READERS) >= 512:
      _READERS.clear()
    reader = _READERS[key] = (specs, _FieldReader(specs, prefix, also_known))
  return reader[1]


def _read_fields(specs, obj, prefix, also_known=(), times=None):
  """Checks `obj` against `specs`; returns (known fields, unknown field count)."""
  reader = _field_reader(specs, prefix, tuple(also_known))
  result = {}
  for name, check, required, default, path in reader.fields:
    if name in obj:
      result[name] = check(obj[name], times)
    elif required:
      raise Violation('%s: missing' % path)
    else:
      result[name] = default
  return result, len(obj.keys() - reader.known)


def _readable(registry, obj, name):
  """The field's value where it meets its own rule, for the dead letter."""
  for spec in registry.envelope_fields:
    if spec.name == name:
      try:
        return check_value(spec, obj.get(name), name)
      except Violation:
        return None
  return None


def validate(obj: dict, raw: bytes, origin: str,
             registry) -> Tuple[Union[Event, DeadLetter], int]:
  """Validates a decoded record; returns (Event or DeadLetter, unknown fields)."""
  version = obj.get('schema_version')
  event_type = obj.get('event_type')
  parsed = parse_version(version)

  def dead(kind, message):
    return DeadLetter.of(
        kind, message, raw, origin,
        idempotency_key=_readable(registry, obj, 'idempotency_key'),
        tenant_id=_readable(registry, obj, 'tenant_id')), 0

  if parsed is not None:
    known_type = registry.is_registered_type(event_type)
    if known_type and not registry.accepts(event_type, parsed):
      if parsed[0] not in registry.majors(event_type):
        return dead(UNSUPPORTED_SCHEMA_VERSION,
                    'schema_version %s: major %d is not registered for %s' % (
                        version, parsed[0], event_type))
      return dead(UNSUPPORTED_SCHEMA_VERSION,
                  'schema_version %s: not in the versions %s accepts (%s)' % (
                      version, event_type, registry.accepted(event_type)))
    if not known_type and not registry.accepted_by_every_type(parsed):
      return dead(UNSUPPORTED_SCHEMA_VERSION,
                  'schema_version %s: not accepted for every event type' % version)
  if isinstance(event_type, str) and not registry.is_registered_type(event_type):
    return dead(UNKNOWN_EVENT_TYPE,
                'event_type %r is not registered' % event_type[:64])
  try:
    # The envelope's payload field is read below with its type's reader schema.
    times = {}
    envelope, unknown = _read_fields(
        registry.envelope_fields, obj, '', also_known=('payload',), times=times)
    payload_obj = obj.get('payload')
    if not isinstance(payload_obj, dict):
      raise Violation('payload: expected an object, got %s' % (
          'nothing' if 'payload' not in obj else _type_name(payload_obj)))
    reader = registry.reader(event_type, version)
    payload, unknown_in_payload = _read_fields(
        reader.fields, payload_obj, 'payload.')
    try:
      payload = registry.upcast(event_type, parsed[0], payload)
    except ValueError as e:
      raise Violation(str(e)) from None
    event_time, ingested_at = times['event_time'], times['ingested_at']
    if event_time > ingested_at + CLOCK_SKEW:
      raise Violation(
          'event_time: %s is more than 300 s after ingested_at %s' % (
              envelope['event_time'], envelope['ingested_at']))
  except Violation as e:
    return dead(SCHEMA_VIOLATION, str(e))
  return Event(
      idempotency_key=envelope['idempotency_key'],
      trace_id=envelope['trace_id'],
      schema_version=version,
      event_type=event_type,
      source=envelope['source'],
      tenant_id=envelope['tenant_id'],
      user_id=payload['user_id'],
      event_time=event_time,
      ingested_at=ingested_at,
      payload=payload,
      raw=raw,
      origin=origin), unknown + unknown_in_payload
