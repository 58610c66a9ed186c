"""RFC 3339 timestamps exactly as the contract reads them.

`YYYY-MM-DD(T|t)HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)`, ASCII digits, a real
date, no leap second, no space separator, a zone required. More than six fraction
digits are truncated to microseconds. The UTC instant must lie in BigQuery's range
(0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z).
"""
import datetime
import re
from typing import Optional

__all__ = ['parse_rfc3339', 'format_utc']

# [0-9], not \d: \d also matches non-ASCII digits.
_RFC3339 = re.compile(
    r'([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})'
    r'(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))')
_UTC = datetime.timezone.utc
# `YYYY-MM-DDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
_CANONICAL_LENGTHS = (20, 27)


def parse_rfc3339(text) -> Optional[datetime.datetime]:
  """Returns the aware UTC datetime of `text`, or None if it is not valid."""
  if not isinstance(text, str):
    return None
  match = _RFC3339.fullmatch(text)
  if match is None:
    return None
  if len(text) in _CANONICAL_LENGTHS and text[10] == 'T' and text[-1] == 'Z':
    # The layout producers write (`...SS.ffffffZ` or `...SSZ`): the C parser
    # reads it three times faster, to the same value (a test compares them).
    try:
      return datetime.datetime.fromisoformat(text)
    except ValueError:
      return None
  return _from_match(match)


def _from_match(match) -> Optional[datetime.datetime]:
  (year, month, day, hour, minute, second, fraction, zulu, sign, off_h,
   off_m) = match.groups()
  micros = int((fraction or '0')[:6].ljust(6, '0'))
  if zulu:
    offset = datetime.timedelta(0)
  else:
    off_h, off_m = int(off_h), int(off_m)
    if off_h > 23 or off_m > 59:
      return None
    offset = datetime.timedelta(hours=off_h, minutes=off_m)
    if sign == '-':
      offset = -offset
  try:
    local = datetime.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second),
        micros, tzinfo=datetime.timezone(offset))
    # Out of range once moved to UTC (e.g. 0001-01-01T00:00:00+01:00).
    return local.astimezone(_UTC)
  except (ValueError, OverflowError):
    return None


def format_utc(value: datetime.datetime) -> str:
  """The canonical text of a UTC datetime: `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
  return value.astimezone(_UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
