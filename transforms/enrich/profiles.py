"""User profiles: reading them and choosing the newest per (tenant_id, user_id).

Pure functions shared by both enrichment modes, so the side input and the cached
lookups give the same answer row for row.
"""
import functools
import json
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from schemas.records import UNKNOWN
from transforms.ingest.timestamps import parse_rfc3339

__all__ = ['Profile', 'parse_profile_line', 'newer', 'newest', 'newest_profiles',
           'read_newest_profiles', 'ProfileError', 'FALLBACK']


class Profile(NamedTuple):
  tier: str
  region: str
  updated_at: str = ''


# No profile: tier and region are `unknown` (contract section 3).
FALLBACK = Profile(UNKNOWN, UNKNOWN)


class ProfileError(ValueError):
  """A profiles line that cannot be read; names the line."""


def parse_profile_line(line, where='') -> Optional[Tuple[Tuple[str, str], Profile]]:
  """One JSON line to ((tenant_id, user_id), Profile); None for a blank line."""
  if isinstance(line, bytes):
    line = line.decode('utf-8')
  if not line.strip():
    return None
  try:
    row = json.loads(line)
    key = (row['tenant_id'], row['user_id'])
    profile = Profile(str(row['tier']), str(row['region']), row['updated_at'])
  except (ValueError, KeyError, TypeError) as e:
    raise ProfileError('profiles %s: cannot read %r: %s' % (
        where, line[:80], e)) from None
  if not all(isinstance(k, str) for k in key) or parse_rfc3339(
      profile.updated_at) is None:
    raise ProfileError('profiles %s: bad tenant_id, user_id or updated_at in %r'
                       % (where, line[:80]))
  return key, profile


def newer(a: Profile, b: Profile) -> Profile:
  """The profile with the newest `updated_at` (ties: the larger tier, region)."""
  return max(a, b, key=lambda p: (parse_rfc3339(p.updated_at), p.tier, p.region))


def newest(profiles: Iterable[Profile]) -> Profile:
  """The newest of several profiles of one user (the side input's combiner)."""
  return functools.reduce(newer, profiles)


def newest_profiles(lines: Iterable, where: str = ''
                    ) -> Dict[Tuple[str, str], Profile]:
  """All lines to {(tenant_id, user_id): newest Profile}; an error names
  `where` (the file) and the line number."""
  result = {}
  for number, line in enumerate(lines, 1):
    parsed = parse_profile_line(line, '%sline %d' % (
        where + ' ' if where else '', number))
    if parsed is None:
      continue
    key, profile = parsed
    result[key] = newer(result[key], profile) if key in result else profile
  return result


def read_newest_profiles(path: str) -> Dict[Tuple[str, str], Profile]:
  """`newest_profiles` of one JSON lines file (local, gs://, s3://;
  decompressed by its suffix), read line by line."""
  with FileSystems.open(path) as f:
    return newest_profiles(iter(f.readline, b''), path)
