"""Registered repairs: fixes the replay job may apply to a dead letter's bytes.

A repair is registered for the dead-letter kinds it can help and returns new
bytes, or None where it does not apply. It only undoes a known, mechanical
producer mistake; it never invents a value. Add one with `@repair(name, kinds)`;
`python -m pipelines.replay --repair NAME` picks them (default: all).
"""
import json
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from schemas.records import MALFORMED, SCHEMA_VIOLATION

__all__ = ['Repair', 'REPAIRS', 'repair', 'apply_repairs']

_UTF8_BOM = b'\xef\xbb\xbf'
_CURRENCY = re.compile(r'[A-Za-z]{3}')


class Repair(NamedTuple):
  name: str
  kinds: Tuple[str, ...]
  fn: Callable[[bytes], Optional[bytes]]


REPAIRS: Dict[str, Repair] = {}


def repair(name: str, kinds: Sequence[str]):
  """Registers the decorated `bytes -> bytes or None` function as a repair."""
  def register(fn):
    if name in REPAIRS:
      raise ValueError('a repair named %r is already registered' % name)
    REPAIRS[name] = Repair(name, tuple(kinds), fn)
    return fn
  return register


@repair('strip_bom', kinds=[MALFORMED])
def strip_bom(raw: bytes) -> Optional[bytes]:
  """A UTF-8 byte-order mark some Windows tools put before the JSON."""
  return raw[len(_UTF8_BOM):] if raw.startswith(_UTF8_BOM) else None


@repair('uppercase_currency', kinds=[SCHEMA_VIOLATION])
def uppercase_currency(raw: bytes) -> Optional[bytes]:
  """`"currency": "eur"` -> `"EUR"` (ISO 4217 codes are upper case)."""
  try:
    obj = json.loads(raw)
  except ValueError:
    return None
  payload = obj.get('payload') if isinstance(obj, dict) else None
  currency = payload.get('currency') if isinstance(payload, dict) else None
  if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency) \
      or currency.isupper():
    return None
  payload['currency'] = currency.upper()
  return json.dumps(obj, ensure_ascii=False).encode('utf-8')


def apply_repairs(kind: str, raw: bytes,
                  names: Sequence[str]) -> Tuple[bytes, List[str]]:
  """Applies the named repairs registered for `kind`, in order; returns the
  bytes and the names of the repairs that changed them."""
  applied = []
  for name in names:
    candidate = REPAIRS[name]
    if kind in candidate.kinds:
      fixed = candidate.fn(raw)
      if fixed is not None and fixed != raw:
        raw = fixed
        applied.append(name)
  return raw, applied
