"""One test per rule of the contract's precise readings (section 1) and check order
(section 2), on JSON and, where the rule applies, on Confluent wire-format Avro."""
import json

import pytest

from schemas.records import (DeadLetter, Event, MALFORMED, OVERSIZED, RawRecord,
                             SCHEMA_VIOLATION, UNKNOWN_EVENT_TYPE,
                             UNSUPPORTED_SCHEMA_VERSION)
from tests.helpers import as_avro, as_json, envelope
from transforms.ingest.decode import decode_and_validate

ENCODINGS = {'json': as_json, 'avro': as_avro}


def check(data: bytes):
  result, unknown = decode_and_validate(RawRecord(data, 'test:1'))
  return result, unknown


def kind_of(data: bytes):
  result, _ = check(data)
  assert result is not None, 'a blank line is not a record'
  if isinstance(result, Event):
    return 'event'
  assert isinstance(result, DeadLetter)
  assert result.raw == data, 'a dead letter keeps the original bytes'
  return result.error_kind


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_valid_event_is_an_event_with_utc_times(encode):
  result, _ = check(encode(envelope(
      event_time='2024-03-01T12:00:00+02:00',
      ingested_at='2024-03-01T10:00:01.1234567Z')))
  assert isinstance(result, Event)
  assert result.event_time.isoformat() == '2024-03-01T10:00:00+00:00'
  assert result.ingested_at.isoformat() == '2024-03-01T10:00:01.123456+00:00'
  assert result.user_id == 'u1'


@pytest.mark.parametrize('line', [b'', b'   ', b'\t \r', b' \n '])
def test_blank_lines_are_not_records(line):
  assert check(line) == (None, 0)


def padded(encode, size, char='y'):
  """An encoded valid event of exactly `size` bytes (padding in `url`)."""
  for n in range(size - 600, size):
    data = encode(envelope(payload__url=char * (n // len(char.encode()))))
    if len(data) == size:
      return data
  raise AssertionError('no padding gives %d bytes' % size)


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_size_limit_65536_allowed_65537_oversized(encode):
  assert kind_of(padded(encode, 65536)) == 'event'
  assert kind_of(padded(encode, 65537)) == OVERSIZED


def test_size_limit_counts_bytes_not_characters():
  data = padded(as_json, 65538, char='\u00e9')
  assert len(data.decode('utf-8')) < 65536
  assert kind_of(data) == OVERSIZED


def test_byte_order_mark_is_malformed():
  assert kind_of(b'\xef\xbb\xbf' + as_json(envelope())) == MALFORMED


@pytest.mark.parametrize('data', [
    b'\xff\xfe{}', b'{"a": "\xc3"}', b'not json', b'{"a": NaN}',
    b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1,}', b'[1, 2,]',
    b'{"a": "\\ud800"}', b'{"a": "\\udc00x"}', b'{"a": 1, "a": 1}',
    b'{"p": {"k": 1, "k": 2}}', b'[1]', b'"text"', b'42', b'null',
    b'{"a": "\x01"}', b'{"a": 1} {"b": 2}',
])
def test_json_malformed(data):
  assert kind_of(data) == MALFORMED


def test_malformed_keeps_non_utf8_bytes():
  result, _ = check(b'\xff\xfe{}')
  assert result.error_stage == 'decode' and result.raw == b'\xff\xfe{}'


def test_paired_surrogate_escape_is_valid():
  data = as_json(envelope()).replace(b'"/home"', b'"\\ud83d\\ude00"')
  result, _ = check(data)
  assert result.payload['url'] == '\U0001F600'


@pytest.mark.parametrize('data', [
    b'\x00\x00\x00\x00\x63' + b'\x02', b'\x00\x00\x00', b'\x00'])
def test_avro_unknown_schema_or_short_header_is_malformed(data):
  assert kind_of(data) == MALFORMED


def test_avro_truncated_or_trailing_bytes_is_malformed():
  good = as_avro(envelope())
  assert kind_of(good[:-3]) == MALFORMED
  assert kind_of(good + b'\x00') == MALFORMED


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_characters_are_code_points(encode):
  assert kind_of(encode(envelope(trace_id='é' * 128))) == 'event'
  assert kind_of(encode(envelope(trace_id='😀' * 128))) == 'event'
  assert kind_of(encode(envelope(trace_id='é' * 129))) == SCHEMA_VIOLATION
  assert kind_of(encode(envelope(source='s' * 64))) == 'event'
  assert kind_of(encode(envelope(source='s' * 65))) == SCHEMA_VIOLATION
  assert kind_of(encode(envelope(trace_id=''))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_strings_are_not_normalised(encode):
  composed, decomposed = 'caf\u00e9', 'cafe\u0301'
  a, _ = check(encode(envelope(payload__url=composed)))
  b, _ = check(encode(envelope(payload__url=decomposed)))
  assert a.payload['url'] == composed and b.payload['url'] == decomposed


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize('event_type, field', [
    ('page_view', 'url'), ('click', 'element_id'), ('purchase', 'order_id'),
    ('page_view', 'referrer')])
def test_empty_strings_are_valid(encode, event_type, field):
  assert kind_of(encode(envelope(event_type, **{'payload__' + field: ''}))) == 'event'


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize('field, value', [
    ('event_time', '2024-03-01T10:00:00'), ('event_time', '2024-03-01 10:00:00Z'),
    ('event_time', '2024-02-30T10:00:00Z'), ('event_time', '2024-03-01T23:59:60Z'),
    ('ingested_at', '0000-12-31T00:00:00Z'),
    ('event_time', '0001-01-01T00:00:00+01:00'),
    ('event_time', '２０２４-03-01T10:00:00Z')])
def test_bad_timestamps_are_schema_violations(encode, field, value):
  assert kind_of(encode(envelope(**{field: value}))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_fraction_digits_truncated_to_microseconds(encode):
  result, _ = check(encode(envelope(event_time='2024-03-01T10:00:00.99999999Z')))
  assert result.event_time.microsecond == 999999


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_clock_skew_gate_exactly_300_s_is_valid(encode):
  ok = envelope(event_time='2024-03-01T10:05:00Z', ingested_at='2024-03-01T10:00:00Z')
  late = envelope(event_time='2024-03-01T10:05:00.000001Z',
                  ingested_at='2024-03-01T10:00:00Z')
  # compares UTC instants: +01:00 offset on one side only
  offset = envelope(event_time='2024-03-01T11:05:00+01:00',
                    ingested_at='2024-03-01T10:00:00Z')
  assert kind_of(encode(ok)) == 'event'
  assert kind_of(encode(late)) == SCHEMA_VIOLATION
  assert kind_of(encode(offset)) == 'event'


@pytest.mark.parametrize('value', [2.0, True, 2 ** 63, -1, 1e3, '5'])
def test_json_integer_rules(value):
  assert kind_of(as_json(envelope(payload__duration_ms=value))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('value', [0, 2 ** 63 - 1, None])
def test_json_integer_valid_and_optional_null(value):
  assert kind_of(as_json(envelope(payload__duration_ms=value))) == 'event'


def test_json_integer_exponent_literal_is_not_integer():
  data = as_json(envelope()).replace(b'"duration_ms": 1200', b'"duration_ms": 1e2')
  assert kind_of(data) == SCHEMA_VIOLATION


def test_avro_negative_long_is_violation():
  assert kind_of(as_avro(envelope(payload__duration_ms=-5))) == SCHEMA_VIOLATION


def test_optional_fields_default_to_null():
  event = envelope()
  del event['payload']['referrer'], event['payload']['duration_ms']
  result, _ = check(as_json(event))
  assert result.payload['referrer'] is None
  assert result.payload['duration_ms'] is None
  assert result.payload['session_id'] is None


@pytest.mark.parametrize('value', [True, False, '12.5', None, -0.01])
def test_json_amount_must_be_a_non_negative_number(value):
  assert kind_of(as_json(envelope('purchase', payload__amount=value))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('value', [0, 12, 12.5, 2 ** 62 // 100])
def test_json_amount_int_or_float_valid(value):
  assert kind_of(as_json(envelope('purchase', payload__amount=value))) == 'event'


def test_json_amount_beyond_a_64_bit_amount_minor_lands_exactly():
  # A valid JSON number that v1 accepts: v1 purchases are upcast to v2's
  # 64-bit amount_minor (contract section 1, purchase v2), which cannot hold
  # 2**70 EUR, so it stays empty and the amount is kept exactly beside it.
  result, _ = check(as_json(envelope('purchase', payload__amount=2 ** 70)))
  assert result.payload['amount_minor'] is None
  assert result.payload['amount_decimal'] == str(2 ** 70)


def test_json_number_overflowing_a_float_is_not_a_number():
  data = as_json(envelope('purchase')).replace(b'"amount": 12.5', b'"amount": 1e400')
  assert kind_of(data) == SCHEMA_VIOLATION
  # elsewhere (an unknown field) the same literal is valid JSON and ignored
  data = as_json(envelope()).replace(b'"trace_id"', b'"big": 1e400, "trace_id"')
  assert kind_of(data) == 'event'


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_avro_non_finite_amount_is_violation(value):
  assert kind_of(as_avro(envelope('purchase', payload__amount=value))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize('currency', ['eur', 'EURO', 'E1R', ''])
def test_currency_pattern(encode, currency):
  assert kind_of(encode(envelope('purchase', payload__currency=currency))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize('field, value', [
    ('tenant_id', 'Acme'), ('tenant_id', '-acme'), ('tenant_id', 'a' * 65),
    ('tenant_id', 'acme\n'), ('idempotency_key', 'A' * 64),
    ('idempotency_key', 'a' * 63), ('schema_version', 'v1.x'),
    ('schema_version', 'V1'), ('schema_version', 'v1\n')])
def test_envelope_patterns(encode, field, value):
  assert kind_of(encode(envelope(**{field: value}))) == SCHEMA_VIOLATION


@pytest.mark.parametrize('encode', ENCODINGS.values(), ids=ENCODINGS.keys())
def test_major_version_compared_as_number(encode):
  result, _ = check(encode(envelope(schema_version='v01')))
  assert isinstance(result, Event) and result.schema_version == 'v01'
  assert kind_of(encode(envelope(schema_version='v1.7'))) == 'event'
  assert kind_of(encode(envelope(schema_version='v10'))) == UNSUPPORTED_SCHEMA_VERSION
  assert kind_of(encode(envelope(schema_version='v0'))) == UNSUPPORTED_SCHEMA_VERSION


def test_v1_page_view_read_with_newest_v1_reader_keeps_session_id():
  result, unknown = check(as_json(envelope(payload__session_id='s-1')))
  assert result.payload['session_id'] == 's-1' and unknown == 0


@pytest.mark.parametrize('event_type', ['click', 'purchase'])
def test_session_id_on_click_or_purchase_is_an_unknown_field(event_type):
  result, unknown = check(as_json(envelope(event_type, payload__session_id='s')))
  assert isinstance(result, Event)
  assert 'session_id' not in result.payload and unknown == 1


def test_unknown_fields_are_dropped_and_counted():
  result, unknown = check(as_json(envelope(extra=1, more={'x': 2},
                                           payload__other=[1])))
  assert isinstance(result, Event) and unknown == 3
  assert 'other' not in result.payload


@pytest.mark.parametrize('data, expected', [
    ({'schema_version': 'v2'}, UNSUPPORTED_SCHEMA_VERSION),
    ({'schema_version': 'banana', 'event_type': 'signup'}, UNKNOWN_EVENT_TYPE),
    ({'schema_version': 'v2', 'event_type': 'signup'}, UNSUPPORTED_SCHEMA_VERSION),
    ({}, SCHEMA_VIOLATION),
    ({'event_type': 7}, SCHEMA_VIOLATION),
    ({'event_type': 'signup'}, UNKNOWN_EVENT_TYPE),
])
def test_checks_run_in_contract_order(data, expected):
  assert kind_of(json.dumps(data).encode()) == expected


def test_version_gate_then_event_type_on_full_envelopes():
  assert kind_of(as_json(envelope(schema_version='v2'))) == UNSUPPORTED_SCHEMA_VERSION
  signup = dict(envelope(), event_type='signup')
  assert kind_of(as_json(signup)) == UNKNOWN_EVENT_TYPE
  assert kind_of(as_json(dict(signup, schema_version='v2'))) == \
      UNSUPPORTED_SCHEMA_VERSION
  assert kind_of(as_json(dict(signup, schema_version='x'))) == UNKNOWN_EVENT_TYPE


@pytest.mark.parametrize('field', [
    'trace_id', 'idempotency_key', 'schema_version', 'source', 'tenant_id',
    'event_time', 'ingested_at', 'payload'])
def test_missing_envelope_field_is_a_violation(field):
  event = envelope()
  del event[field]
  assert kind_of(as_json(event)) == SCHEMA_VIOLATION


@pytest.mark.parametrize('event_type, field', [
    ('page_view', 'user_id'), ('page_view', 'url'), ('click', 'element_id'),
    ('click', 'url'), ('purchase', 'order_id'), ('purchase', 'amount'),
    ('purchase', 'currency'), ('purchase', 'user_id')])
def test_missing_required_payload_field_is_a_violation(event_type, field):
  event = envelope(event_type)
  del event['payload'][field]
  result, _ = check(as_json(event))
  assert result.error_kind == SCHEMA_VIOLATION
  assert field in result.error_message


@pytest.mark.parametrize('payload', [None, [], 'x', 1])
def test_payload_must_be_an_object(payload):
  assert kind_of(as_json(envelope(payload=payload))) == SCHEMA_VIOLATION


def test_user_id_length_rules():
  assert kind_of(as_json(envelope(payload__user_id=''))) == SCHEMA_VIOLATION
  assert kind_of(as_json(envelope(payload__user_id='u' * 128))) == 'event'
  assert kind_of(as_json(envelope(payload__user_id='u' * 129))) == SCHEMA_VIOLATION


def test_dead_letter_carries_readable_key_and_tenant():
  result, _ = check(as_json(envelope(payload__user_id=5)))
  assert result.error_kind == SCHEMA_VIOLATION
  assert result.tenant_id == 'acme' and len(result.idempotency_key) == 64
  result, _ = check(as_json(envelope(tenant_id='BAD', payload__user_id=5)))
  assert result.tenant_id is None
