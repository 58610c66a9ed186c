"""The fast paths give exactly what the plain readings give.

`parse_json` keeps orjson's result only where it is provably the strict
parser's (`transforms/ingest/parsing.py`); `parse_rfc3339` reads the canonical layout
with `datetime.fromisoformat`. Each is compared with its strict reading on
generated input made to hit the differences: repeated keys, colons in keys and
strings, integers past 64 bits, huge and tiny floats, escapes, deep nesting,
Unicode, impossible dates. The batched path's Arrow `events` tables equal the
rows `event_row` gives, and the cold tier groups them the same way; its
payload JSON and enrichment equal what the plain functions give. (Its Arrow
its dedup: `test_batched_dedup.py`.)
"""
import datetime
import json
import math

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas import rows, tables
from tests.helpers import sample_events
from transforms.ingest import parallel_decode
from transforms.sinks import cold_sink
from transforms.ingest import parsing
from transforms.ingest import timestamps
from transforms.enrich.side_input import apply_profile
from transforms.enrich.profiles import Profile
from transforms.ingest.parsing import Malformed
from transforms.sinks.staging import rows_to_table
from transforms.views.specs import micros
from transforms.views.late_gate import mark_late

SETTINGS = settings(max_examples=600, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _strict(data):
  try:
    return ('value', parsing._parse_json_strict(data))
  except Malformed as e:
    return ('malformed', str(e))


def _fast(data):
  try:
    return ('value', parsing.parse_json(data))
  except Malformed as e:
    return ('malformed', str(e))


def _typed(outcome):
  """The outcome with each number's type kept (1 == 1.0 == True in Python)."""
  def walk(value):
    if isinstance(value, dict):
      return {k: walk(v) for k, v in value.items()}
    if isinstance(value, list):
      return [walk(v) for v in value]
    if isinstance(value, parsing.NotFinite):
      return ('NotFinite', value.literal)
    if isinstance(value, float):  # repr tells -0.0 from 0.0, and nan
      return ('float', repr(value))
    return (type(value).__name__, value)
  kind, value = outcome
  return kind, walk(value) if kind == 'value' else value


_NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=2 ** 63 - 5, max_value=2 ** 64 + 5),
    st.integers(min_value=-2 ** 63 - 5, max_value=-2 ** 63 + 5),
    st.integers(min_value=10 ** 30, max_value=10 ** 40),
    st.floats(allow_nan=False, allow_infinity=False))
_TEXT = st.text(alphabet=st.sampled_from(
    list('ab:"\\/ é€😀\t\n') + ['\x00', '\u2028', '\ud800']), max_size=8)
_LITERALS = st.sampled_from([
    '1e400', '-1e400', '1E-400', '0.1e999', '123456789012345678901234567890',
    '-9223372036854775809', '18446744073709551616', '9223372036854775808',
    '-0', '-0.0', '1.5e308', '2.5e-324', 'NaN', 'Infinity', '01', '1.',
    'true', 'false', 'null', '"\\u003a"', '"\\ud83d\\ude00"', '"\\ud800"',
    '"a:b"', '"\\""'])


def _render(value):
  """A JSON text of `value` (lists of pairs are objects, repeats allowed)."""
  if isinstance(value, tuple) and value and value[0] == 'object':
    return '{%s}' % ', '.join('%s: %s' % (json.dumps(k), _render(v))
                              for k, v in value[1])
  if isinstance(value, tuple) and value and value[0] == 'literal':
    return value[1]
  if isinstance(value, list):
    return '[%s]' % ','.join(_render(v) for v in value)
  return json.dumps(value, ensure_ascii=False)


_KEYS = st.one_of(st.sampled_from(['a', 'b', 'a:b', ':', 'payload', 'id']), _TEXT)
_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT,
              _LITERALS.map(lambda l: ('literal', l))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_KEYS, inner), max_size=4).map(
            lambda pairs: ('object', pairs))),
    max_leaves=12)
_RECORDS = st.lists(st.tuples(_KEYS, _VALUES), max_size=6).map(
    lambda pairs: ('object', pairs))


@SETTINGS
@given(_RECORDS, st.sampled_from(['', ' ', '\n', '\ufeff']))
def test_fast_json_reading_equals_the_strict_one(record, padding):
  text = _render(record)
  try:
    data = (padding + text).encode('utf-8')
  except UnicodeEncodeError:  # a lone surrogate cannot be sent as UTF-8
    data = (padding + text).encode('utf-8', 'surrogatepass')
  assert _typed(_fast(data)) == _typed(_strict(data))


@SETTINGS
@given(st.binary(max_size=80))
def test_fast_json_reading_equals_the_strict_one_on_any_bytes(data):
  assert _typed(_fast(data)) == _typed(_strict(data))


@pytest.mark.parametrize('text', [
    '{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', '{"a:":1,"a:":2}',
    '{"a":"x:y","a":"x:y"}', '{"a":123456789012345678901234567890}',
    '{"a":-9223372036854775809}', '{"a":18446744073709551616}',
    '{"a":1e400}', '{"a":"\\ud800"}', '[1]', '{"a":NaN}'])
def test_the_differences_orjson_has_are_read_strictly(text):
  data = text.encode()
  assert _typed(_fast(data)) == _typed(_strict(data))


def test_the_exponent_rule_the_big_integer_check_relies_on():
  """orjson writes every float of at least 2**63 with `e+` (as repr does from
  1e16): the fast path's test for an integer literal past 64 bits."""
  for exponent in range(16, 309):
    for mantissa in (1.0, 1.5, 9.999999):
      for sign in (1, -1):
        value = sign * mantissa * 10.0 ** exponent
        if math.isfinite(value) and abs(value) >= 2.0 ** 63:
          assert b'e+' in orjson.dumps(value), value
  assert b'e+' in orjson.dumps(2.0 ** 63) and b'e+' in orjson.dumps(2.0 ** 64)


_INSTANTS = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30),
    timezones=st.just(datetime.timezone.utc))


@SETTINGS
@given(_INSTANTS, st.booleans())
def test_fast_timestamp_reading_equals_the_general_one(instant, with_fraction):
  text = '%04d-%02d-%02dT%02d:%02d:%02d%sZ' % (
      instant.year, instant.month, instant.day, instant.hour, instant.minute,
      instant.second, '.%06d' % instant.microsecond if with_fraction else '')
  general = timestamps._from_match(timestamps._RFC3339.fullmatch(text))
  parsed = timestamps.parse_rfc3339(text)
  assert parsed == general and parsed.tzinfo is general.tzinfo
  assert parsed.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize('text', [
    '2023-02-29T00:00:00Z', '2024-02-30T00:00:00.000000Z', '2024-01-01T24:00:00Z',
    '2024-01-01T23:59:60Z', '2024-01-01T23:60:00.000000Z', '0000-01-01T00:00:00Z',
    '2024-13-01T00:00:00Z', '2024-00-10T00:00:00.000000Z'])
def test_impossible_instants_in_the_canonical_layout_are_refused(text):
  assert timestamps.parse_rfc3339(text) is None
  assert timestamps._from_match(timestamps._RFC3339.fullmatch(text)) is None


_PAYLOAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2 ** 63, max_value=2 ** 63 - 1),
    st.text(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2))


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), _PAYLOAD_VALUES, max_size=5))
def test_payload_json_is_what_json_dumps_writes(payload):
  assert rows._payload_json(payload) == json.dumps(
      payload, ensure_ascii=False, separators=(',', ':'))


def test_payload_json_control_characters_and_separators():
  payload = {'a': ''.join(chr(i) for i in range(0, 0x30)) + '\u2028\u2029\x7f"\\/'}
  assert rows._payload_json(payload) == json.dumps(
      payload, ensure_ascii=False, separators=(',', ':'))


def test_events_table_equals_the_rows_event_row_gives():
  events = sample_events()
  # Some marked too late for views, with their letters (streaming).
  events = [mark_late(e, micros(e.event_time) + 10 ** 12, 600) if i % 5 == 0
            else e for i, e in enumerate(events)]
  assert sum(e.late_letter is not None for e in events) == 12
  now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
  expected = rows_to_table(tables.STAGED_EVENTS,
                           [rows.event_row(e, now) for e in events])
  assert rows.events_table(events, now).equals(expected)
  assert rows.events_table([], now).num_rows == 0


def test_cold_files_hold_one_partition_each(tmp_path):
  events = sample_events()
  now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
  table = rows_to_table(tables.EVENTS, [
      {k: v for k, v in rows.event_row(e, now).items() if k != 'late_letter'}
      for e in events])
  written = cold_sink.write_cold_rows(str(tmp_path), table, 7)
  assert sum(n for _, n in written) == len(events)
  assert len(written) > 6  # two ingest dates, three tenants, 7 rows a file
  for path, _ in written:
    got = pq.read_table(path).to_pylist()
    assert len({(r['ingested_at'].strftime('%Y-%m-%d'), r['tenant_id'])
                for r in got}) == 1
    date, tenant = path.split('ingest_date=')[1].split('/tenant_id=')
    assert got[0]['ingested_at'].strftime('%Y-%m-%d') == date
    assert tenant.startswith(got[0]['tenant_id'] + '/')


def test_enrichment_sets_only_tier_and_region():
  event = sample_events(1)[0]
  enriched = apply_profile(event, Profile('gold', 'eu'))
  assert enriched == event._replace(user_tier='gold', user_region='eu')
  assert apply_profile(event, None) == event._replace(
      user_tier='unknown', user_region='unknown')


def test_the_batched_path_raises_the_gc_thresholds_once_never_lowers():
  import gc
  before = gc.get_threshold()
  try:
    gc.set_threshold(700, 10, 10)
    parallel_decode.raise_gc_thresholds()
    assert gc.get_threshold() == parallel_decode.GC_THRESHOLDS
    gc.set_threshold(10 ** 6, 5, 5)
    parallel_decode.raise_gc_thresholds()
    assert gc.get_threshold() == (10 ** 6, 5, 5)
  finally:
    gc.set_threshold(*before)
