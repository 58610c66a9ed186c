"""Schema compatibility by Avro's resolution rules, and the deprecation policy.

`problems(reader, writer)` lists why data written with `writer` cannot be read
with `reader` (Avro specification, "Schema Resolution"): a reader field the
writer lacks needs a default; a field's writer type must equal or promote to
the reader's (int -> long -> float -> double, string <-> bytes); a union reads a
writer type that one of its branches reads, and every branch of a writer union
must be readable. Fields only the writer has are skipped.

Modes, per event type in the registry: BACKWARD (the new schema reads data
written with the older ones), FORWARD (the older ones read the new data), FULL
(both). Each new minor is checked against every registered version of its major.

Deprecation (`"x-deprecated": "v1.2"` on a field, the version that deprecated
it): a deprecated field keeps a default (optional) for two minor versions, and
only from then on may a new version leave it out. A field left out without that
notice is refused whatever the mode.
"""
from typing import List, Optional

from schemas.registry import parse_version

__all__ = ['problems', 'check_compatibility', 'check_deprecations',
           'DEPRECATION_MINORS']

DEPRECATION_MINORS = 2
_PROMOTIONS = {
    'int': {'long', 'float', 'double'}, 'long': {'float', 'double'},
    'float': {'double'}, 'string': {'bytes'}, 'bytes': {'string'},
}


def _type_name(avro_type):
  if isinstance(avro_type, dict):
    return avro_type.get('name') or avro_type['type']
  if isinstance(avro_type, list):
    return ' | '.join(_type_name(t) for t in avro_type)
  return avro_type


def _kind(avro_type):
  if isinstance(avro_type, list):
    return 'union'
  if isinstance(avro_type, dict):
    return avro_type['type']
  return avro_type


def _type_problems(reader, writer, path) -> List[str]:
  if _kind(writer) == 'union':
    found = []
    for branch in writer:
      found += _type_problems(reader, branch, path)
    return found
  if _kind(reader) == 'union':
    if any(not _type_problems(branch, writer, path) for branch in reader):
      return []
    return ['%s: %s cannot be read as %s' % (
        path, _type_name(writer), _type_name(reader))]
  rkind, wkind = _kind(reader), _kind(writer)
  if rkind == 'record' and wkind == 'record':
    return problems(reader, writer, path + '.')
  if rkind == 'array' and wkind == 'array':
    return _type_problems(reader['items'], writer['items'], path + '[]')
  if rkind == 'map' and wkind == 'map':
    return _type_problems(reader['values'], writer['values'], path + '{}')
  if rkind == 'enum' and wkind == 'enum':
    missing = set(writer['symbols']) - set(reader['symbols'])
    if missing and 'default' not in reader:
      return ['%s: enum symbols %s are unknown to the reader' % (
          path, ', '.join(sorted(missing)))]
    return []
  if rkind == wkind or rkind in _PROMOTIONS.get(wkind, ()):
    return []
  return ['%s: %s cannot be read as %s' % (
      path, _type_name(writer), _type_name(reader))]


def problems(reader: dict, writer: dict, prefix: str = '') -> List[str]:
  """Why `writer` data is unreadable with `reader` (empty: readable)."""
  found = []
  writer_fields = {f['name']: f for f in writer['fields']}
  for field in reader['fields']:
    path = prefix + field['name']
    source = writer_fields.get(field['name'])
    if source is None:
      for alias in field.get('aliases', ()):
        source = writer_fields.get(alias, source)
    if source is None:
      if 'default' not in field:
        found.append('%s: the reader requires it (no default) and the writer '
                     'does not have it' % path)
      continue
    found += _type_problems(field['type'], source['type'], path)
  return found


def check_compatibility(mode: str, new: dict, old: dict, new_version: str,
                        old_version: str) -> List[str]:
  """Problems of registering `new` next to `old` under `mode`, each naming the
  field, the rule and the versions."""
  found = []
  if mode in ('BACKWARD', 'FULL'):
    found += ['BACKWARD (%s reads %s data): %s' % (new_version, old_version, p)
              for p in problems(new, old)]
  if mode in ('FORWARD', 'FULL'):
    found += ['FORWARD (%s reads %s data): %s' % (old_version, new_version, p)
              for p in problems(old, new)]
  return found


def _deprecated_since(field) -> Optional[tuple]:
  since = field.get('x-deprecated')
  return parse_version(since) if since else None


def check_deprecations(new: dict, new_version: str, previous: dict,
                       previous_version: str) -> List[str]:
  """The deprecation policy between the newest registered minor and a new one."""
  found = []
  version = parse_version(new_version)
  new_fields = {f['name']: f for f in new['fields']}
  for field in new['fields']:
    if _deprecated_since(field) and 'default' not in field:
      found.append('%s: deprecated fields stay optional (give it a default) '
                   'for %d minor versions' % (field['name'], DEPRECATION_MINORS))
  for field in previous['fields']:
    if field['name'] in new_fields:
      continue
    since = _deprecated_since(field)
    if since is None:
      found.append('%s: removed without deprecation; mark it "x-deprecated": '
                   '"%s" with a default and remove it %d minor versions later'
                   % (field['name'], new_version, DEPRECATION_MINORS))
    elif since[0] == version[0] and version[1] < since[1] + DEPRECATION_MINORS:
      found.append('%s: deprecated in v%d.%d, so it may be removed from '
                   'v%d.%d on, not in %s' % (
                       field['name'], since[0], since[1], since[0],
                       since[1] + DEPRECATION_MINORS, new_version))
  return found
