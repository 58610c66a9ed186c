"""Masking named fields (PII) in dead letters and log lines.

With `--mask_fields payload.user_id,payload.email`, a dead letter's stored
record has those fields' values replaced by `"***"` (the record is re-written as
JSON, `raw_encoding = 'masked-utf-8'`), and any occurrence of those values in
its error message is replaced too. A record that cannot be read as a JSON
object (malformed bytes, binary Avro) is stored as `sha256:<digest>` with
`raw_encoding = 'masked-sha256'`, since what it holds cannot be told apart.
The letter's id is still derived from the original bytes, so reruns do not
double it. The replay job skips masked letters. The trade: a masked letter can no longer be replayed as
it was sent (its PII is gone by design); leave masking off where replay of
personal data is needed and access to `dead_letters` is controlled instead.
Valid events in `events` are not masked: they are the product.
"""
import hashlib
import json
import re
from typing import Optional, Sequence, Tuple

__all__ = ['MASK', 'parse_fields', 'mask_record', 'mask_text', 'MASKED_ENCODINGS']

MASK = '***'
MASKED_ENCODINGS = ('masked-utf-8', 'masked-sha256')
_FIELD = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')


def parse_fields(value: Optional[str]) -> Tuple[Tuple[str, ...], ...]:
  """`'payload.user_id,source'` -> (('payload', 'user_id'), ('source',))."""
  if not value:
    return ()
  fields = []
  for part in value.split(','):
    part = part.strip()
    if not _FIELD.fullmatch(part):
      raise ValueError('%r is not a field path like payload.user_id' % part)
    fields.append(tuple(part.split('.')))
  return tuple(fields)


def _mask_object(obj, fields):
  """Masks the paths in a parsed object; returns the values it replaced."""
  found = []
  for path in fields:
    node = obj
    for name in path[:-1]:
      node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node and node[path[-1]] is not None:
      found.append(node[path[-1]])
      node[path[-1]] = MASK
  return found


def mask_record(raw: bytes, fields) -> Tuple[bytes, list, bool]:
  """(masked bytes, values replaced, readable): unreadable records become a
  digest (readable False)."""
  try:
    obj = json.loads(raw)
  except ValueError:
    obj = None
  if not isinstance(obj, dict):
    return b'sha256:' + hashlib.sha256(raw).hexdigest().encode(), [], False
  values = _mask_object(obj, fields)
  return json.dumps(obj, ensure_ascii=False).encode('utf-8'), values, True


def mask_text(text: str, values: Sequence) -> str:
  for value in sorted((str(v) for v in values if str(v)), key=len, reverse=True):
    text = text.replace(value, MASK)
  return text


