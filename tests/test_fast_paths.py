"""The fast paths give exactly what the plain readings give.

`parse_json` keeps orjson's result only where it is provably the strict
parser's (`transforms/parsing.py`); `parse_rfc3339` reads the canonical layout
with `datetime.fromisoformat`. Each is compared with its strict reading on
generated input made to hit the differences: repeated keys, colons in keys and
strings, integers past 64 bits, huge and tiny floats, escapes, deep nesting,
Unicode, impossible dates. The batched path's Arrow `events` tables equal the
rows `event_row` gives, and the cold tier groups them the same way; its
Arrow view rows (any batches, times before and after 1970), payload JSON,
enrichment and dedup key set equal what the plain functions give.
"""
import datetime
import json
import math

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas import rows, tables
from schemas.records import Event, RawRecord
from tests.helpers import as_json, envelope
from transforms import (batched, batched_views, cold_sink, parsing, timestamps,
                        views)
from transforms.enrich import apply_profile
from transforms.profiles import Profile
from transforms.decode import decode_and_validate
from transforms.parsing import Malformed
from transforms.staging import rows_to_table

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


def _events(count=60):
  """Valid events of every type, some with non-ASCII payload text."""
  result = []
  for i in range(count):
    event_type = ('page_view', 'click', 'purchase')[i % 3]
    record = envelope(event_type, tenant_id='tenant-%d' % (i % 3),
                      ingested_at='2024-03-0%dT23:59:59.99999%dZ' % (
                          1 + i % 2, i % 10),
                      event_time='2024-03-01T23:58:%02dZ' % (i % 60),
                      payload__user_id='user-%d' % i)
    if event_type == 'page_view':
      record['payload']['url'] = '/é/%d/😀' % i
    event, _ = decode_and_validate(RawRecord(as_json(record), 'f:%d' % i))
    assert isinstance(event, Event), event
    result.append(event._replace(user_tier=('gold', 'unknown')[i % 2]))
  return result


def test_events_table_equals_the_rows_event_row_gives():
  events = _events()
  now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
  expected = rows_to_table(tables.EVENTS, [rows.event_row(e, now) for e in events])
  assert rows.events_table(events, now).equals(expected)
  assert rows.events_table([], now).num_rows == 0


def test_cold_groups_of_a_table_equal_those_of_its_rows():
  events = _events()
  now = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)
  def groups(element):
    return {key: cold_sink._as_table([data]).to_pylist()
            for key, data in cold_sink._group_batch(element, 2)}
  from_table = groups(rows.events_table(events, now))
  from_rows = groups([rows.event_row(e, now) for e in events])
  assert from_table == from_rows
  assert len(from_table) > 6  # two ingest dates, three tenants, two shards
  for (date, tenant, _), group in from_table.items():
    assert {(r['ingested_at'].strftime('%Y-%m-%d'), r['tenant_id'])
            for r in group} == {(date, tenant)}


def _partials_by_the_pure_functions(events):
  result = {spec.name: {} for spec in views.VIEWS}
  for event in events:
    t = views.micros(event.event_time)
    for spec in views.VIEWS:
      table = result[spec.name]
      key = spec.key(event)
      for start in views.window_starts(t, spec.size_s, spec.period_s):
        acc = table.get((start, key))
        if acc is None:
          acc = table[(start, key)] = views.new_accumulator()
        views.add_event(acc, t, event.user_id)
  return result


NOW = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)


def _view_rows_by_the_pure_functions(events):
  """{view name: Arrow table of its rows} by `views.view_row`, sorted."""
  result = {}
  for name, accumulators in _partials_by_the_pure_functions(events).items():
    spec = {s.name: s for s in views.VIEWS}[name]
    result[name] = rows_to_table(tables.TABLES[name], [
        views.view_row(spec, start, key, acc, 'ON_TIME', NOW)
        for (start, key), acc in sorted(accumulators.items())])
  return result


def _view_rows_by_arrow(*batches):
  """{view name: its rows}: each batch's partials merged, as the combiner
  (lifted, then merged) does."""
  merge = batched_views._MergePartials()
  accumulators = {}
  for batch in batches:
    inputs = batched_views.view_inputs(batch)
    for name, partial in batched_views.partials(inputs):
      acc = accumulators.get(name, merge.create_accumulator())
      accumulators[name] = merge.add_input(acc, partial)
  specs = {s.name: s for s in views.VIEWS}
  return {name: batched_views.view_rows(
              specs[name], merge.extract_output(merge.merge_accumulators(
                  [merge.create_accumulator(), acc])), 'ON_TIME', NOW)
          for name, acc in accumulators.items()}


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3),
                          st.integers(-3 * 3600 * 10 ** 6, 3 * 3600 * 10 ** 6)),
                min_size=1, max_size=40),
       st.integers(0, 40))
def test_arrow_view_rows_equal_the_view_functions(specs, cut):
  """Any events, before or after the epoch, cut into two batches anywhere."""
  base = _events(3)
  events = []
  for type_index, user, offset_us in specs:
    event = base[type_index]
    events.append(event._replace(
        user_id='user-%d' % user,
        event_time=views.from_micros(offset_us + (
            1709251200 * 10 ** 6 if offset_us % 2 else 0))))
  expected = _view_rows_by_the_pure_functions(events)
  batches = [events[:cut], events[cut:]] if 0 < cut < len(events) else [events]
  got = _view_rows_by_arrow(*batches)
  assert got.keys() == expected.keys()
  for name in expected:
    assert got[name].equals(expected[name]), name


def test_arrow_view_rows_over_many_batches_are_compacted_exactly(monkeypatch):
  regrouped = []
  regroup = batched_views._regroup

  def counted(table):
    regrouped.append(table.num_rows)
    return regroup(table)
  monkeypatch.setattr(batched_views, '_regroup', counted)
  events = _events(60)
  expected = _view_rows_by_the_pure_functions(events)
  got = _view_rows_by_arrow(*[events[i:i + 7] for i in range(0, 60, 7)])
  # Grouped again along the way (each view once at the end, and more).
  assert len(regrouped) > len(expected)
  for name in expected:
    assert expected[name].num_rows > 0
    assert got[name].equals(expected[name]), name


def test_arrow_view_rows_of_the_events_table_equal_those_of_the_events():
  events = _events(40)
  from_table = batched_views.partials(rows.events_table(events, NOW))
  from_events = batched_views.partials(batched_views.view_inputs(events))
  assert [(n, t.to_pylist()) for n, t in from_table] == \
      [(n, t.to_pylist()) for n, t in from_events]


def test_windows_of_uneven_period_hold_each_time_once():
  spec = views.ViewSpec('uneven', 100, 30, lambda e: (e.tenant_id,),
                        ('tenant_id',))
  times = [-10 ** 8 - 1, -1, 0, 1, 29999999, 30000000, 10 ** 8 + 7]
  inputs = pa.table({
      'event_time': pa.array(times, pa.int64()).cast(pa.timestamp('us', 'UTC')),
      'tenant_id': ['t'] * len(times)})
  windowed = batched_views._windowed(inputs, spec)
  got = sorted(zip(windowed.column('t').to_pylist(),
                   windowed.column('window_start').to_pylist()))
  assert got == sorted((t, s) for t in times
                       for s in views.window_starts(t, 100, 30))


def test_view_rows_sort_keys_as_python_does():
  names = ['z', 'Z', 'é', 'e', '😀', 'ａ', 'a\u0301', '']
  base = _events(1)[0]
  events = [base._replace(tenant_id=tenant, user_id=user,
                          event_time=views.from_micros(start + 5))
            for start in (3600 * 10 ** 6, 0)
            for tenant in names[:3] for user in names]
  expected = _view_rows_by_the_pure_functions(events)
  got = _view_rows_by_arrow(events)
  for name in expected:
    assert got[name].equals(expected[name]), name


def test_view_rows_as_dicts_for_the_bigquery_sink():
  events = _events(20)
  spec = views.VIEWS[0]
  table = _view_rows_by_arrow(events)[spec.name]
  accumulators = _partials_by_the_pure_functions(events)[spec.name]
  assert table.to_pylist() == [
      views.view_row(spec, start, key, acc, 'ON_TIME', NOW)
      for (start, key), acc in sorted(accumulators.items())]
  empty = batched_views.view_rows(spec, pa.table({}), 'ON_TIME', NOW)
  assert empty.num_rows == 0 and empty.schema == tables.arrow_schema(
      tables.TABLES[spec.name])


def test_enrichment_sets_only_tier_and_region():
  event = _events(1)[0]
  enriched = apply_profile(event, Profile('gold', 'eu'))
  assert enriched == event._replace(user_tier='gold', user_region='eu')
  assert apply_profile(event, None) == event._replace(
      user_tier='unknown', user_region='unknown')


def test_the_batched_path_raises_the_gc_thresholds_once_never_lowers():
  import gc
  before = gc.get_threshold()
  try:
    gc.set_threshold(700, 10, 10)
    batched.raise_gc_thresholds()
    assert gc.get_threshold() == batched.GC_THRESHOLDS
    gc.set_threshold(10 ** 6, 5, 5)
    batched.raise_gc_thresholds()
    assert gc.get_threshold() == (10 ** 6, 5, 5)
  finally:
    gc.set_threshold(*before)


def test_key_set_keeps_its_earliest_expiry_without_a_scan():
  import pickle
  keys = batched.KeySet()
  assert keys.earliest is None
  for key, expires in (('a', 50), ('b', 20), ('c', 90), ('d', 20)):
    keys.add(key, expires)
    assert keys.earliest == min(keys.expiry.values())
  copy = pickle.loads(pickle.dumps(keys))
  assert copy.expiry == keys.expiry and copy.earliest == 20
  keys.drop_expired(20)
  assert keys.expiry == {'a': 50, 'c': 90} and keys.earliest == 50
  keys.drop_expired(90)
  assert keys.expiry == {} and keys.earliest is None
  assert batched.KeySet({'x': 7, 'y': 3}).earliest == 3
