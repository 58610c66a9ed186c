"""Property tests: whatever the bytes, decoding never raises, and every record
ends as an event, a dead letter with its exact bytes, or a blank line."""
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.records import DeadLetter, ERROR_KINDS, Event, RawRecord
from tests.helpers import as_avro, as_json, envelope
from transforms.ingest.decode import decode_and_validate

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
VALID = [as_json(envelope(t)) for t in ('page_view', 'click', 'purchase')]
VALID_AVRO = [as_avro(envelope(t)) for t in ('page_view', 'click', 'purchase')]


def _check(data):
  result, unknown = decode_and_validate(RawRecord(data, 'fuzz:1'))
  assert unknown >= 0
  if result is None:
    assert not data.strip()
  elif isinstance(result, DeadLetter):
    assert result.raw == data and result.error_kind in ERROR_KINDS
    assert result.error_message
  else:
    assert isinstance(result, Event) and result.raw == data


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(data):
  _check(data)


@SETTINGS
@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_behind_the_avro_magic_byte(data):
  _check(b'\x00' + data)


@SETTINGS
@given(st.sampled_from(VALID + VALID_AVRO), st.data())
def test_truncated_and_mutated_valid_records(record, data):
  cut = data.draw(st.integers(0, len(record)))
  _check(record[:cut])
  position = data.draw(st.integers(0, len(record) - 1))
  byte = data.draw(st.integers(0, 255))
  _check(record[:position] + bytes([byte]) + record[position + 1:])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@SETTINGS
@given(st.sampled_from(['trace_id', 'idempotency_key', 'schema_version',
                        'event_type', 'source', 'tenant_id', 'event_time',
                        'ingested_at', 'payload']),
       JSON_VALUES, st.sampled_from(['page_view', 'click', 'purchase']))
def test_wrong_types_in_every_envelope_field(field, value, event_type):
  event = envelope(event_type)
  event[field] = value
  _check(json.dumps(event).encode('utf-8', 'surrogatepass'))


@SETTINGS
@given(st.text(), JSON_VALUES, st.sampled_from(['page_view', 'click', 'purchase']))
def test_wrong_types_in_payload_fields(key, value, event_type):
  event = envelope(event_type)
  field = key if key else 'user_id'
  event['payload'][field] = value
  _check(json.dumps(event).encode('utf-8', 'surrogatepass'))


def test_deep_nesting_and_huge_numbers():
  _check(b'[' * 100000 + b']' * 100000)
  _check(b'{"a":' * 5000 + b'1' + b'}' * 5000)
  _check(json.dumps(envelope('purchase')).replace(
      '12.5', '9' * 5000).encode())
  _check(json.dumps(envelope('purchase')).replace('12.5', '1e999999').encode())
