"""Registering schema versions: compatibility per mode, the deprecation policy,
new majors with upcasters, and the pipeline reading what was registered."""
import json
import shutil

import pytest

from schemas.compat import check_compatibility, problems
from schemas.records import Event, RawRecord, UNSUPPORTED_SCHEMA_VERSION
from schemas.register import RegistrationError, main, register
from schemas.registry import AVRO_DIR, Registry
from tests.helpers import as_json, envelope
from transforms.ingest.decode import decode_and_validate

BASE = json.load(open('%s/page_view.v1.1.avsc' % AVRO_DIR))


def variant(change=None, remove=(), add=()):
  """page_view v1.1 with fields changed ({name: {key: value}}), removed, added."""
  schema = json.loads(json.dumps(BASE))
  fields = [f for f in schema['fields'] if f['name'] not in remove]
  for field in fields:
    field.update((change or {}).get(field['name'], {}))
  schema['fields'] = fields + list(add)
  return schema


@pytest.fixture
def registry_copy(tmp_path):
  folder = tmp_path / 'avro'
  shutil.copytree(AVRO_DIR, folder)
  return folder / 'registry.json'


def set_mode(registry_path, event_type, mode):
  config = json.loads(registry_path.read_text())
  config['event_types'][event_type]['compatibility'] = mode
  registry_path.write_text(json.dumps(config))


def write(tmp_path, schema, name='new.avsc'):
  path = tmp_path / name
  path.write_text(json.dumps(schema))
  return str(path)


OPTIONAL_ADDED = {'name': 'country', 'type': ['null', 'string'], 'default': None}
REQUIRED_ADDED = {'name': 'country', 'type': 'string'}


@pytest.mark.parametrize('mode, schema, refused_by', [
    # an optional field added: fine both ways
    ('BACKWARD', variant(add=[OPTIONAL_ADDED]), None),
    ('FORWARD', variant(add=[OPTIONAL_ADDED]), None),
    ('FULL', variant(add=[OPTIONAL_ADDED]), None),
    # a required field added: the new reader cannot read old data
    ('BACKWARD', variant(add=[REQUIRED_ADDED]), 'BACKWARD'),
    ('FORWARD', variant(add=[REQUIRED_ADDED]), None),
    ('FULL', variant(add=[REQUIRED_ADDED]), 'BACKWARD'),
    # a type narrowed (long -> int): the new reader cannot read old longs
    ('BACKWARD', variant(change={'duration_ms': {'type': ['null', 'int']}}),
     'BACKWARD'),
    # a type widened (long -> double): new reads old, old cannot read new
    ('BACKWARD', variant(change={'duration_ms': {'type': ['null', 'double']}}), None),
    ('FORWARD', variant(change={'duration_ms': {'type': ['null', 'double']}}),
     'FORWARD'),
    ('FULL', variant(change={'duration_ms': {'type': ['null', 'double']}}),
     'FORWARD'),
])
def test_compatibility_modes(tmp_path, registry_copy, mode, schema, refused_by):
  set_mode(registry_copy, 'page_view', mode)
  path = write(tmp_path, schema)
  if refused_by is None:
    assert register('page_view', 'v1.2', path, str(registry_copy),
                    check_only=True) == 'page_view.v1.2.avsc'
    return
  with pytest.raises(RegistrationError) as refused:
    register('page_view', 'v1.2', path, str(registry_copy), check_only=True)
  assert any(p.startswith(refused_by + ' (') for p in refused.value.problems)


def test_refusal_names_the_field_and_the_rule(tmp_path, registry_copy):
  set_mode(registry_copy, 'page_view', 'FULL')
  path = write(tmp_path, variant(change={'duration_ms': {'type': ['null', 'double']}}))
  with pytest.raises(RegistrationError) as refused:
    register('page_view', 'v1.2', path, str(registry_copy))
  assert refused.value.problems == [
      'FORWARD (v1 reads v1.2 data): duration_ms: double cannot be read as '
      'null | long',
      'FORWARD (v1.1 reads v1.2 data): duration_ms: double cannot be read as '
      'null | long']
  # nothing was written
  assert 'v1.2' not in json.loads(registry_copy.read_text())[
      'event_types']['page_view']['versions']


def test_avro_promotions_and_unions():
  record = lambda t: {'type': 'record', 'name': 'R', 'fields': [
      {'name': 'x', 'type': t}]}
  assert problems(record('long'), record('int')) == []
  assert problems(record('double'), record('float')) == []
  assert problems(record('string'), record('bytes')) == []
  assert problems(record('int'), record('long')) == [
      'x: long cannot be read as int']
  assert problems(record(['null', 'string']), record('string')) == []
  assert problems(record('string'), record(['null', 'string'])) == [
      'x: null cannot be read as string']
  assert check_compatibility('FULL', record('long'), record('long'), 'v1.1', 'v1') == []


def test_removing_a_field_needs_deprecation_first(tmp_path, registry_copy):
  path = write(tmp_path, variant(remove=['referrer']))
  with pytest.raises(RegistrationError) as refused:
    register('page_view', 'v1.2', path, str(registry_copy))
  assert refused.value.problems == [
      'referrer: removed without deprecation; mark it "x-deprecated": "v1.2" '
      'with a default and remove it 2 minor versions later']


def test_deprecated_field_removed_too_early_is_refused_then_allowed(
    tmp_path, registry_copy):
  deprecated = variant(change={'referrer': {'x-deprecated': 'v1.2'}})
  register('page_view', 'v1.2', write(tmp_path, deprecated, 'a.avsc'),
           str(registry_copy))
  removed = variant(remove=['referrer'])
  with pytest.raises(RegistrationError) as refused:
    register('page_view', 'v1.3', write(tmp_path, removed, 'b.avsc'),
             str(registry_copy))
  assert refused.value.problems == [
      'referrer: deprecated in v1.2, so it may be removed from v1.4 on, not in v1.3']
  assert register('page_view', 'v1.4', write(tmp_path, removed, 'b.avsc'),
                  str(registry_copy)) == 'page_view.v1.4.avsc'


def test_deprecating_a_required_field_keeps_it_optional(tmp_path, registry_copy):
  schema = variant(change={'url': {'x-deprecated': 'v1.2'}})
  with pytest.raises(RegistrationError) as refused:
    register('page_view', 'v1.2', write(tmp_path, schema), str(registry_copy))
  assert 'url: deprecated fields stay optional' in refused.value.problems[0]


def test_registered_minor_is_read_by_the_pipeline(tmp_path, registry_copy):
  register('page_view', 'v1.2', write(tmp_path, variant(add=[OPTIONAL_ADDED])),
           str(registry_copy))
  config = json.loads(registry_copy.read_text())
  assert config['wire_ids']['6'] == ['page_view', 'v1.2']
  registry = Registry(config, str(registry_copy.parent))
  result, _ = decode_and_validate(RawRecord(as_json(envelope(
      schema_version='v1.2', payload__country='PT')), 'x:1'), registry)
  assert isinstance(result, Event) and result.payload['country'] == 'PT'


def test_new_major_needs_an_upcaster_and_acceptance(tmp_path, registry_copy):
  v2 = json.load(open('%s/purchase.v2.avsc' % AVRO_DIR))
  path = write(tmp_path, v2)
  config = json.loads(registry_copy.read_text())
  purchase = config['event_types']['purchase']
  purchase['versions'].pop('v2')
  purchase.pop('upcasters')
  purchase['accept'] = ['v1.*']
  registry_copy.write_text(json.dumps(config))
  with pytest.raises(RegistrationError, match='--upcaster: a new major'):
    register('purchase', 'v2', path, str(registry_copy))
  register('purchase', 'v2', path, str(registry_copy),
           upcaster='purchase_v1_to_v2')
  registry = Registry(json.loads(registry_copy.read_text()), str(registry_copy.parent))
  v2_event = dict(envelope('purchase', schema_version='v2'), payload={
      'user_id': 'u1', 'order_id': 'o-1', 'amount_minor': 5, 'currency': 'EUR'})
  result, _ = decode_and_validate(RawRecord(as_json(v2_event), 'x:1'), registry)
  assert result.error_kind == UNSUPPORTED_SCHEMA_VERSION  # not accepted yet
  config = json.loads(registry_copy.read_text())
  config['event_types']['purchase']['accept'].append('v2.*')
  registry = Registry(config, str(registry_copy.parent))
  result, _ = decode_and_validate(RawRecord(as_json(v2_event), 'x:1'), registry)
  assert isinstance(result, Event)


def test_command_line_prints_refusals_and_exits_1(tmp_path, registry_copy, capsys):
  path = write(tmp_path, variant(add=[REQUIRED_ADDED]))
  assert main(['--event_type', 'page_view', '--version', 'v1.2', '--schema', path,
               '--registry', str(registry_copy)]) == 1
  err = capsys.readouterr().err
  assert err.startswith('refused: page_view v1.2\n')
  assert ('BACKWARD (v1.2 reads v1 data): country: the reader requires it '
          '(no default) and the writer does not have it') in err
  path = write(tmp_path, variant(add=[OPTIONAL_ADDED]))
  assert main(['--event_type', 'page_view', '--version', 'v1.2', '--schema', path,
               '--registry', str(registry_copy)]) == 0
  assert 'registered as page_view.v1.2.avsc' in capsys.readouterr().out
