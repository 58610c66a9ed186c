"""Registers a new schema version, refusing what would break readers or writers.

    python -m schemas.register --event_type page_view --version v1.2 \\
        --schema page_view.v1.2.avsc [--registry schemas/avro/registry.json] \\
        [--upcaster NAME] [--accept] [--check_only]

A new minor is checked against every registered version of its major by the
type's compatibility mode (BACKWARD, FORWARD or FULL, in `registry.json`) and the
deprecation policy (`compat.py`); a refusal prints each problem with the field
and the rule, and exits 1. A new major is a breaking change by definition: it is
not checked for compatibility but needs `--upcaster`, a function in
`schemas/upcasters.py` that lifts the previous major's payloads to it, and it is
only accepted by the pipeline once it is in the type's allow-list (`--accept`,
or by editing `accept`). On success the schema file is copied next to the
registry, the version and a new wire id are added, and the registry is reloaded
to prove it still loads.
"""
import argparse
import json
import os
import shutil
import sys

import fastavro

from schemas import upcasters
from schemas.compat import check_compatibility, check_deprecations
from schemas.registry import DEFAULT_REGISTRY, Registry, parse_version

__all__ = ['register', 'RegistrationError', 'main']


class RegistrationError(ValueError):
  """Refused: `problems` lists each reason (field and rule)."""

  def __init__(self, problems):
    super().__init__('; '.join(problems))
    self.problems = list(problems)


def _check(config, base_dir, event_type, version, schema, upcaster):
  parsed = parse_version(version)
  if parsed is None:
    return ['--version: %r is not vN or vN.M' % version]
  if event_type not in config['event_types']:
    return ['--event_type: %r is not registered; new types are added to '
            'registry.json by hand, with their first schema' % event_type]
  try:
    fastavro.parse_schema(schema)
  except Exception as e:  # fastavro raises several types for a bad schema
    return ['--schema: not a valid Avro schema: %s' % e]
  if schema.get('type') != 'record':
    return ['--schema: a payload schema must be an Avro record']
  entry = config['event_types'][event_type]
  registry = Registry(config, base_dir)
  existing = {parse_version(v): v for v in entry['versions']}
  if parsed in existing:
    return ['--version: %s %s is already registered' % (event_type, version)]
  same_major = sorted(v for v in existing if v[0] == parsed[0])
  if not same_major:
    newest = max(existing)
    if parsed[0] < newest[0]:
      return ['--version: major %d is older than the newest, %d' % (
          parsed[0], newest[0])]
    if not upcaster:
      return ['--upcaster: a new major (%s) needs an upcaster from v%d' % (
          version, newest[0])]
    if upcaster not in upcasters.UPCASTERS:
      return ['--upcaster: no upcaster named %r in schemas/upcasters.py' % upcaster]
    return []
  if parsed < same_major[-1]:
    return ['--version: %s is older than the newest registered minor %s' % (
        version, existing[same_major[-1]])]
  mode = registry.compatibility[event_type]
  found = []
  for old in same_major:
    old_schema = registry.schema(event_type, existing[old]).avro
    found += check_compatibility(mode, schema, old_schema, version, existing[old])
  newest = registry.schema(event_type, existing[same_major[-1]])
  found += check_deprecations(schema, version, newest.avro, newest.version)
  return found


def register(event_type, version, schema_path, registry_path=None,
             upcaster=None, accept=False, check_only=False) -> str:
  """Checks and (unless `check_only`) registers; returns the schema file name.

  Raises:
    RegistrationError: listing every problem found.
  """
  registry_path = os.path.abspath(registry_path or DEFAULT_REGISTRY)
  base_dir = os.path.dirname(registry_path)
  with open(registry_path, encoding='utf-8') as f:
    config = json.load(f)
  with open(schema_path, encoding='utf-8') as f:
    try:
      schema = json.load(f)
    except json.JSONDecodeError as e:
      raise RegistrationError(['--schema: %s is not JSON: %s' % (schema_path, e)])
  found = _check(config, base_dir, event_type, version, schema, upcaster)
  if found:
    raise RegistrationError(found)
  filename = '%s.%s.avsc' % (event_type, version)
  if check_only:
    return filename
  entry = config['event_types'][event_type]
  parsed = parse_version(version)
  if upcaster:
    previous = max(parse_version(v) for v in entry['versions'])
    entry.setdefault('upcasters', {})['v%d' % previous[0]] = upcaster
  entry['versions'][version] = filename
  if accept and 'accept' in entry:
    entry['accept'].append('v%d.*' % parsed[0])
  wire_ids = config['wire_ids']
  wire_ids[str(max(int(k) for k in wire_ids) + 1)] = [event_type, version]
  target = os.path.join(base_dir, filename)
  if os.path.abspath(schema_path) != target:
    shutil.copyfile(schema_path, target)
  Registry(config, base_dir)  # it must still load before it is written
  temp = registry_path + '.tmp'
  with open(temp, 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2)
    f.write('\n')
  os.replace(temp, registry_path)
  return filename


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--event_type', required=True)
  parser.add_argument('--version', required=True)
  parser.add_argument('--schema', required=True)
  parser.add_argument('--registry', default=None)
  parser.add_argument('--upcaster', default=None)
  parser.add_argument('--accept', action='store_true',
                      help='add a new major to the type\'s allow-list')
  parser.add_argument('--check_only', action='store_true')
  args = parser.parse_args(argv)
  try:
    filename = register(args.event_type, args.version, args.schema,
                        args.registry, args.upcaster, args.accept,
                        args.check_only)
  except RegistrationError as e:
    print('refused: %s %s' % (args.event_type, args.version), file=sys.stderr)
    for problem in e.problems:
      print('  %s' % problem, file=sys.stderr)
    return 1
  print('%s %s %s as %s' % (
      args.event_type, args.version,
      'is compatible' if args.check_only else 'registered', filename))
  return 0


if __name__ == '__main__':
  sys.exit(main())
