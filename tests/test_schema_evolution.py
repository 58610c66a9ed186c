"""Version gates per event type, purchase v2 and the v1 -> v2 upcaster (issue 7)."""
import json
import os
import shutil

import pytest

from schemas.records import Event, SCHEMA_VIOLATION, UNSUPPORTED_SCHEMA_VERSION
from schemas.registry import AVRO_DIR, load_registry
from schemas.upcasters import minor_units, purchase_v1_to_v2
from tests.helpers import as_avro, as_json, envelope
from transforms.ingest.decode import decode_and_validate
from transforms.ingest.decoding import decode_records
from schemas.records import RawRecord


def check(data, registry=None):
  result, _ = decode_and_validate(RawRecord(data, 'test:1'), registry)
  return result


def purchase_v2(**payload):
  event = envelope('purchase', schema_version='v2')
  event['payload'] = dict({'user_id': 'u1', 'order_id': 'o-1',
                           'amount_minor': 1250, 'currency': 'EUR'}, **payload)
  return event


def custom_registry(tmp_path, change):
  """A copy of the shipped registry with `change(config)` applied."""
  folder = tmp_path / 'registry'
  shutil.copytree(AVRO_DIR, folder)
  path = folder / 'registry.json'
  config = json.loads(path.read_text())
  change(config)
  path.write_text(json.dumps(config))
  return str(path)


@pytest.mark.parametrize('amount, currency, minor', [
    (12.5, 'EUR', 1250), (0.1, 'USD', 10), (500, 'JPY', 500),
    (1.234, 'KWD', 1234), (0, 'GBP', 0), (19.99, 'EUR', 1999)])
def test_upcaster_is_exact_in_iso_4217_minor_units(amount, currency, minor):
  upcast = purchase_v1_to_v2({'user_id': 'u', 'order_id': 'o',
                              'amount': amount, 'currency': currency})
  assert upcast == {'user_id': 'u', 'order_id': 'o', 'amount_minor': minor,
                    'currency': currency, 'amount_decimal': str(amount)}
  assert type(upcast['amount_minor']) is int


@pytest.mark.parametrize('amount, currency, exact', [
    (12.345, 'EUR', '12.345'), (0.5, 'JPY', '0.5'), (0.00001, 'USD', '0.00001'),
    (2 ** 70, 'GBP', '1180591620717411303424'),
    (1e300, 'USD', '1' + '0' * 300), (1.0, 'ABC', '1.0'),
    (2 ** 63 / 100, 'EUR', '92233720368547760')])
def test_an_amount_minor_units_cannot_hold_lands_exactly_and_is_counted(
    amount, currency, exact):
  """A v1 purchase that v1 accepts lands whatever its amount (contract
  section 1): `amount_minor` empty, the amount as sent in `amount_decimal`,
  and the decode step counts it; nothing rounded, nothing refused."""
  data = as_json(envelope('purchase', payload__amount=amount,
                          payload__currency=currency))
  event = check(data)
  assert isinstance(event, Event), event
  assert event.payload['amount_minor'] is None
  assert event.payload['amount_decimal'] == exact
  decoded = decode_records([RawRecord(data, 'f:1'),
                            as_json(envelope('purchase'))], load_registry())
  assert len(decoded.events) == 2 and decoded.inexact_amounts == 1


def test_minor_units_follow_iso_4217():
  assert [minor_units(c) for c in ('EUR', 'JPY', 'BHD', 'XXX')] == [2, 0, 3, 2]


@pytest.mark.parametrize('encode', [as_json, lambda e: as_avro(e, 'v2')],
                         ids=['json', 'avro'])
def test_v1_and_v2_purchases_land_in_one_shape(encode):
  v1 = check(as_json(envelope('purchase')))
  v2 = check(encode(purchase_v2()))
  assert isinstance(v1, Event) and isinstance(v2, Event)
  assert v2.payload == {
      'user_id': 'u1', 'order_id': 'o-1', 'amount_minor': 1250, 'currency': 'EUR'}
  # The upcast v1 payload keeps its amount as sent beside amount_minor.
  assert v1.payload == dict(v2.payload, amount_decimal='12.5')
  assert (v1.schema_version, v2.schema_version) == ('v1', 'v2')  # as sent


def test_v2_purchase_follows_v2_rules():
  assert check(as_json(purchase_v2(amount_minor=12.5))).error_kind == SCHEMA_VIOLATION
  assert check(as_json(purchase_v2(amount_minor=-1))).error_kind == SCHEMA_VIOLATION
  old_shape = envelope('purchase', schema_version='v2')  # amount, no amount_minor
  letter = check(as_json(old_shape))
  assert letter.error_message == 'payload.amount_minor: missing'


@pytest.mark.parametrize('event_type', ['page_view', 'click'])
def test_v2_of_other_types_stays_unsupported(event_type):
  letter = check(as_json(envelope(event_type, schema_version='v2')))
  assert letter.error_kind == UNSUPPORTED_SCHEMA_VERSION
  assert 'major 2 is not registered for %s' % event_type in letter.error_message


def test_allow_list_gates_a_registered_version(tmp_path):
  def only_v1(config):
    config['event_types']['purchase']['accept'] = ['v1.*']
    config['event_types']['page_view']['accept'] = ['v1.1']
  registry = load_registry(custom_registry(tmp_path, only_v1))
  letter = check(as_json(purchase_v2()), registry)
  assert letter.error_kind == UNSUPPORTED_SCHEMA_VERSION
  assert letter.error_message == (
      'schema_version v2: not in the versions purchase accepts (v1.*)')
  assert isinstance(check(as_json(envelope('purchase')), registry), Event)
  # exact minors: v1.1 only, so v1 (= v1.0) and v1.2 are outside the list
  assert isinstance(check(as_json(envelope(schema_version='v1.1')), registry), Event)
  for version in ('v1', 'v1.2'):
    letter = check(as_json(envelope(schema_version=version)), registry)
    assert letter.error_kind == UNSUPPORTED_SCHEMA_VERSION, version


def test_registry_refuses_an_older_major_without_an_upcaster(tmp_path):
  def no_upcaster(config):
    del config['event_types']['purchase']['upcasters']
  with pytest.raises(ValueError, match='purchase v1 has no upcaster to v2'):
    load_registry(custom_registry(tmp_path, no_upcaster))


def test_registry_refuses_a_bad_allow_list_entry(tmp_path):
  def bad(config):
    config['event_types']['click']['accept'] = ['1.*']
  with pytest.raises(ValueError, match="click accepts '1.\\*'"):
    load_registry(custom_registry(tmp_path, bad))


def test_shipped_registry_files_exist():
  config = json.load(open(os.path.join(AVRO_DIR, 'registry.json')))
  for entry in config['event_types'].values():
    for filename in entry['versions'].values():
      assert os.path.isfile(os.path.join(AVRO_DIR, filename))
