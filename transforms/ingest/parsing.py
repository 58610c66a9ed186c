"""Bytes to a plain object: strict RFC 8259 JSON and Confluent wire-format Avro.

Pure functions, no Beam. `parse_record` returns the decoded object or raises
`Malformed` with a reason; the caller turns that into a `malformed` dead letter.

The contract makes a repeated key, `NaN`/`Infinity` and lone surrogates
`malformed`, but a literal that overflows a float (`1e400`) or an integer past 64
bits is still valid JSON (a schema violation only where a field needs a number).
The standard library's `json` with the hooks below gives exactly that reading,
but its hooks cost Python calls per key and number. So records are parsed by
`orjson` first and its result kept only where it is provably the same
(`_same_as_strict`); anything else (an error, a `\\u` escape, a possible repeated
key or integer past 64 bits) is parsed again strictly, which also names the
reason. A test compares both readings on generated input.
"""
import io
import json
import struct

import fastavro
import orjson

__all__ = ['Malformed', 'NotFinite', 'parse_json', 'parse_wire_avro',
           'parse_record', 'WIRE_MAGIC', 'frame_wire', 'is_blank']

WIRE_MAGIC = b'\x00'
_BOM = b'\xef\xbb\xbf'
# Longer integer literals are kept as NotFinite instead of hitting Python's
# int-from-string digit limit (which would wrongly make the record malformed).
_MAX_INT_DIGITS = 4000


class Malformed(ValueError):
  """The record is not UTF-8, not JSON (or Avro), or not an object."""


class NotFinite(object):
  """A valid JSON number literal that does not fit a 64-bit float (`1e400`)."""
  __slots__ = ('literal',)

  def __init__(self, literal):
    self.literal = literal

  def __repr__(self):
    return 'NotFinite(%s)' % self.literal[:40]


def is_blank(data: bytes) -> bool:
  """True for a line that is empty or only ASCII white space (not a record)."""
  return not data.strip()


def _object_without_repeats(pairs):
  result = {}
  for key, value in pairs:
    if key in result:
      raise Malformed('repeated key %r in an object' % key[:64])
    result[key] = value
  return result


def _reject_constant(name):
  raise Malformed('%s is not JSON' % name)


def _parse_float(literal):
  value = float(literal)
  if value in (float('inf'), float('-inf')):
    return NotFinite(literal)
  return value


def _parse_int(literal):
  if len(literal) > _MAX_INT_DIGITS:
    return NotFinite(literal)
  return int(literal)


def _check_no_surrogates(value):
  """Raises Malformed if any string in the decoded value holds a lone surrogate."""
  stack = [value]
  while stack:
    item = stack.pop()
    if isinstance(item, str):
      try:
        item.encode('utf-8')
      except UnicodeEncodeError:
        raise Malformed('lone surrogate in a string') from None
    elif isinstance(item, dict):
      stack.extend(item.keys())
      stack.extend(item.values())
    elif isinstance(item, list):
      stack.extend(item)


def _same_as_strict(value, data: bytes) -> bool:
  """True if orjson's `value` for `data` (no `\\u` escapes) is what the strict
  parser returns: an object, no repeated key, no integer past 64 bits.

  orjson keeps the last of repeated keys, so they are found by counting: a JSON
  text has one `:` per object member outside strings, and without `\\u`
  escapes a string has the same colons in the text as in its value, so the
  text and orjson's own compact writing of the value have as many colons only
  if no member was dropped. orjson reads an integer literal past 64 bits as a
  float of at least 2**63, which it writes with an exponent (`e+`, as Python's
  repr does from 1e16 up; a test checks it): any such text is read strictly.
  """
  if type(value) is not dict:
    return False
  try:
    written = orjson.dumps(value)
  except orjson.JSONEncodeError:  # nested past orjson's writing depth
    return False
  return b'e+' not in written and written.count(b':') == data.count(b':')


def parse_json(data: bytes) -> dict:
  """Decodes one JSON record (bytes) into a dict, strictly."""
  if b'\\u' not in data:
    try:
      data.decode('utf-8')  # the same UTF-8 rules as the strict reading
      value = orjson.loads(data)
    except (UnicodeDecodeError, orjson.JSONDecodeError):
      pass  # the strict reading below gives the reason
    else:
      if _same_as_strict(value, data):
        return value
  return _parse_json_strict(data)


def _parse_json_strict(data: bytes) -> dict:
  if data.startswith(_BOM):
    raise Malformed('UTF-8 byte-order mark')
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError as e:
    raise Malformed('not UTF-8: %s' % e.reason) from None
  try:
    value = json.loads(
        text, object_pairs_hook=_object_without_repeats,
        parse_constant=_reject_constant, parse_float=_parse_float,
        parse_int=_parse_int)
  except json.JSONDecodeError as e:
    raise Malformed('not JSON: %s' % e) from None
  except RecursionError:
    raise Malformed('not JSON: nested too deeply') from None
  if '\\u' in text:
    _check_no_surrogates(value)
  if not isinstance(value, dict):
    raise Malformed('not an object: %s' % type(value).__name__)
  return value


def frame_wire(schema_id: int, body: bytes) -> bytes:
  """Confluent wire format: magic byte 0, 4-byte big-endian schema id, body."""
  return WIRE_MAGIC + struct.pack('>I', schema_id) + body


def parse_wire_avro(data: bytes, registry) -> dict:
  """Decodes one Confluent wire-format Avro message with its registered schema."""
  if len(data) < 5:
    raise Malformed('Avro wire format needs 5 header bytes, got %d' % len(data))
  schema_id = struct.unpack('>I', data[1:5])[0]
  schema = registry.parsed_wire_schema(schema_id)
  if schema is None:
    if schema_id == 0:
      raise Malformed('Avro writer schema is not registered')
    raise Malformed('unknown Avro schema id %d' % schema_id)
  body = io.BytesIO(data[5:])
  try:
    value = fastavro.schemaless_reader(body, schema, None)
  except (EOFError, StopIteration, ValueError, IndexError, OverflowError,
          UnicodeDecodeError, struct.error, MemoryError) as e:
    raise Malformed('not Avro (schema id %d): %s: %s' % (
        schema_id, type(e).__name__, e)) from None
  rest = len(data) - 5 - body.tell()
  if rest:
    raise Malformed('not Avro (schema id %d): %d trailing bytes' % (schema_id, rest))
  return value


def parse_record(data: bytes, registry) -> dict:
  """Decodes a JSON line or a wire-format Avro message, told apart by byte 0."""
  if data[:1] == WIRE_MAGIC:
    return parse_wire_avro(data, registry)
  return parse_json(data)
