"""The schema registry: event types, versions, reader schemas and wire ids.

The registry is read from `schemas/avro/registry.json` and the `.avsc` files next
to it, so the contract lives as data. It answers three questions:

* the version gate: is this `schema_version` in the type's allow-list
  (`accept`: `v1.*` for every minor of major 1, `v1.1` for exactly that one;
  without a list, every registered major)?
* which reader schema reads it (the newest registered minor of that major), and
  which upcasters lift its payload to the type's newest major?
* which writer schema does a Confluent wire-format schema id name?

Each type also names its compatibility mode (BACKWARD, FORWARD, FULL), which
`python -m schemas.register` enforces when a version is added (`compat.py`).

Constraints Avro cannot express (lengths, patterns, minimums) are carried in the
`.avsc` files as `x-` properties and turned into `FieldSpec`s for the validator.
"""
import copy
import functools
import json
import os
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

import fastavro

__all__ = ['FieldSpec', 'PayloadSchema', 'Registry', 'default_registry',
           'load_registry', 'parse_version', 'AVRO_DIR', 'DEFAULT_REGISTRY',
           'COMPATIBILITY_MODES']

AVRO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'avro')
DEFAULT_REGISTRY = os.path.join(AVRO_DIR, 'registry.json')
COMPATIBILITY_MODES = ('BACKWARD', 'FORWARD', 'FULL')
_VERSION = re.compile(r'v([0-9]+)(?:\.([0-9]+))?')
_ACCEPT = re.compile(r'v([0-9]+)\.(\*|[0-9]+)|v([0-9]+)')


def parse_version(version) -> Optional[Tuple[int, int]]:
  """Returns (major, minor) of a well-formed `schema_version`, else None.

  Numbers compare as numbers: `v01` is major 1, `v10` is major 10.
  """
  if not isinstance(version, str):
    return None
  match = _VERSION.fullmatch(version)
  if match is None:
    return None
  return int(match.group(1)), int(match.group(2) or 0)


class FieldSpec(NamedTuple):
  """One field's rule, read from an Avro field plus its `x-` constraints."""
  name: str
  avro_type: str  # 'string', 'long' or 'double'
  nullable: bool
  required: bool
  default: object = None
  min_length: Optional[int] = None
  max_length: Optional[int] = None
  pattern: Optional[str] = None
  minimum: Optional[float] = None
  fmt: Optional[str] = None


class PayloadSchema(NamedTuple):
  """A registered payload schema: type, version, Avro definition and field rules."""
  event_type: str
  version: str
  avro: dict
  fields: Tuple[FieldSpec, ...]
  business_id: Tuple[str, ...]


def field_specs(avro_record: dict) -> Tuple[FieldSpec, ...]:
  """Turns an Avro record's fields into validation rules."""
  specs = []
  for field in avro_record['fields']:
    ftype = field['type']
    nullable = isinstance(ftype, list) and 'null' in ftype
    if isinstance(ftype, list):
      ftype = next(t for t in ftype if t != 'null')
    specs.append(FieldSpec(
        name=field['name'], avro_type=ftype, nullable=nullable,
        required='default' not in field, default=field.get('default'),
        min_length=field.get('x-min-length'), max_length=field.get('x-max-length'),
        pattern=field.get('x-pattern'), minimum=field.get('x-minimum'),
        fmt=field.get('x-format')))
  return tuple(specs)


def _load_json(name, base_dir=AVRO_DIR):
  with open(os.path.join(base_dir, name), encoding='utf-8') as f:
    return json.load(f)


def _accept_rule(entry: str, event_type: str):
  """`v1.*` -> (1, None): any minor; `v1.1` -> (1, 1); `v1` -> (1, 0)."""
  match = _ACCEPT.fullmatch(entry)
  if match is None:
    raise ValueError('registry: %s accepts %r: expected vN.*, vN.M or vN'
                     % (event_type, entry))
  if match.group(3) is not None:
    return int(match.group(3)), 0
  minor = match.group(2)
  return int(match.group(1)), None if minor == '*' else int(minor)


class Registry(object):
  """The registered event types and their schemas (immutable once loaded).

  Args:
    config: the parsed `registry.json`.
    base_dir: the folder its `.avsc` file names are relative to.
  """

  def __init__(self, config: dict, base_dir: str = AVRO_DIR):
    from schemas import upcasters  # the upcaster functions the config names
    self.config = config
    self.base_dir = base_dir
    self._envelope = _load_json('envelope.avsc', base_dir)
    self.envelope_fields = tuple(
        f for f in field_specs(self._envelope) if f.name != 'payload')
    self._schemas: Dict[str, Dict[Tuple[int, int], PayloadSchema]] = {}
    self._accept: Dict[str, Tuple[Tuple[int, Optional[int]], ...]] = {}
    self._upcasters: Dict[str, Dict[int, object]] = {}
    self.compatibility: Dict[str, str] = {}
    for event_type, entry in config['event_types'].items():
      by_version = {}
      for version, filename in entry['versions'].items():
        avro = _load_json(filename, base_dir)
        by_version[parse_version(version)] = PayloadSchema(
            event_type, version, avro, field_specs(avro),
            tuple(avro.get('x-business-id', ())))
      self._schemas[event_type] = by_version
      majors = sorted({v[0] for v in by_version})
      self._accept[event_type] = tuple(
          _accept_rule(a, event_type) for a in entry['accept']
      ) if 'accept' in entry else tuple((m, None) for m in majors)
      mode = entry.get('compatibility', 'BACKWARD')
      if mode not in COMPATIBILITY_MODES:
        raise ValueError('registry: %s compatibility %r: expected one of %s'
                         % (event_type, mode, ', '.join(COMPATIBILITY_MODES)))
      self.compatibility[event_type] = mode
      chain = {}
      for source, name in entry.get('upcasters', {}).items():
        chain[parse_version(source)[0]] = upcasters.named(name)
      for major in majors[:-1]:
        if major not in chain:
          raise ValueError('registry: %s v%d has no upcaster to v%d' % (
              event_type, major, majors[-1]))
      self._upcasters[event_type] = chain
    # The allow-lists as sets, for the per-record check: (major, None) accepts
    # every minor; a major that is not registered is never accepted.
    self._gates = {
        event_type: frozenset(rule for rule in rules
                              if rule[0] in self.majors(event_type))
        for event_type, rules in self._accept.items()}
    # Asked once per record: answered from dicts built here.
    self._newest = {t: max(v[0] for v in by_version)
                    for t, by_version in self._schemas.items()}
    self._readers = {}
    for event_type, by_version in self._schemas.items():
      for version in sorted(by_version):
        self._readers[(event_type, version[0])] = by_version[version]
    self._wire_ids = {
        int(k): (v[0], v[1]) for k, v in config['wire_ids'].items()}
    self._parsed_wire = {}

  @property
  def event_types(self) -> List[str]:
    return sorted(self._schemas)

  def majors(self, event_type: Optional[str] = None) -> set:
    """Registered major versions of one type, or of any type."""
    types = [event_type] if event_type else list(self._schemas)
    return {v[0] for t in types for v in self._schemas[t]}

  def accepts(self, event_type: str, version: Tuple[int, int]) -> bool:
    """The version gate of one registered type (its allow-list)."""
    gate = self._gates[event_type]
    return (version[0], None) in gate or version in gate

  def accepted_by_every_type(self, version: Tuple[int, int]) -> bool:
    """The gate for a record whose type is missing or unknown: a version that
    some type does not accept is not a version of the contract as a whole."""
    return all(self.accepts(t, version) for t in self._schemas)

  def accepted(self, event_type: str) -> str:
    """The allow-list as text, for a dead letter's message."""
    return ', '.join('v%d.%s' % (major, '*' if minor is None else minor)
                     for major, minor in self._accept[event_type])

  def newest_major(self, event_type: str) -> int:
    return self._newest[event_type]

  def upcast(self, event_type: str, major: int, payload: dict) -> dict:
    """Lifts a payload read at `major` to the type's newest major, one step at
    a time; raises ValueError (naming the field) where it cannot be lifted
    exactly."""
    newest = self.newest_major(event_type)
    while major < newest:
      payload = self._upcasters[event_type][major](payload)
      major += 1
    return payload

  def versions(self, event_type: str) -> List[str]:
    """Registered versions of a type, oldest first."""
    return [self._schemas[event_type][v].version
            for v in sorted(self._schemas[event_type])]

  def is_registered_type(self, event_type) -> bool:
    return isinstance(event_type, str) and event_type in self._schemas

  def reader(self, event_type: str, version: str) -> Optional[PayloadSchema]:
    """The newest registered minor of `version`'s major, or None if not registered."""
    parsed = parse_version(version)
    if parsed is None:
      return None
    return self._readers.get((event_type, parsed[0]))

  def schema(self, event_type: str, version: str) -> PayloadSchema:
    """The payload schema registered under exactly this version."""
    return self._schemas[event_type][parse_version(version)]

  def wire_schema_json(self, event_type: str, version: str) -> dict:
    """The full writer schema (envelope + payload) producers frame Avro with."""
    envelope = copy.deepcopy(self._envelope)
    payload = copy.deepcopy(self.schema(event_type, version).avro)
    for field in envelope['fields']:
      if field['name'] == 'payload':
        field['type'] = payload
    return envelope

  def wire_id(self, event_type: str, version: str) -> int:
    for schema_id, (etype, ver) in self._wire_ids.items():
      if etype == event_type and parse_version(ver) == parse_version(version):
        return schema_id
    raise KeyError('no wire id for %s %s' % (event_type, version))

  def parsed_wire_schema(self, schema_id: int):
    """The parsed fastavro writer schema for a wire id, or None if unknown."""
    if schema_id not in self._wire_ids:
      return None
    if schema_id not in self._parsed_wire:
      self._parsed_wire[schema_id] = fastavro.parse_schema(
          self.wire_schema_json(*self._wire_ids[schema_id]))
    return self._parsed_wire[schema_id]

  def wire_id_for_schema(self, writer_schema: dict) -> Optional[int]:
    """The wire id whose schema has the same canonical form, else None."""
    canonical = fastavro.schema.to_parsing_canonical_form(writer_schema)
    for schema_id in self._wire_ids:
      if fastavro.schema.to_parsing_canonical_form(
          self.parsed_wire_schema(schema_id)) == canonical:
        return schema_id
    return None


@functools.lru_cache(maxsize=None)
def load_registry(path: Optional[str] = None) -> Registry:
  """The registry at `path` (a `registry.json`; default: the one shipped in
  `schemas/avro/`), loaded once per process and path."""
  path = os.path.abspath(path or DEFAULT_REGISTRY)
  base_dir = os.path.dirname(path)
  return Registry(_load_json(os.path.basename(path), base_dir), base_dir)


def default_registry() -> Registry:
  """The registry shipped in `schemas/avro/`."""
  return load_registry(None)
