"""Property test over the whole pipeline: generated mixes of valid events,
retries, truncated and mutated JSON and Avro records, random bytes, deep nesting,
huge numbers, strange Unicode and wrong types go through the real graph (side-input
and lookup enrichment) into a real DuckDB file and cold store, and every record ends
in exactly one place: records = events rows + duplicates + dead letters."""
import json
import os
import uuid

import apache_beam as beam
from hypothesis import HealthCheck, given, settings, strategies as st

from pipelines.graph import build
from pipelines.summary import read_counters
from schemas.records import RawRecord
from schemas.rows import raw_bytes
from tests.cli import query
from tests.helpers import as_avro, as_json, envelope, options

TYPES = ('page_view', 'click', 'purchase')


def _valid(n):
  event_type = TYPES[n % 3]
  return envelope(event_type, trace_id='t-%d' % n, **(
      {'payload__url': '/%d' % n} if event_type != 'purchase'
      else {'payload__order_id': 'o-%d' % n}))


WEIRD = st.sampled_from([
    '\u0000', '\ud7ff', '\U0001f600', 'e\u0301', '\u202e', '\ufeff', 'x' * 300])
HUGE = st.sampled_from([2 ** 63, -2 ** 63 - 1, 10 ** 400, 1e308, -0.0])


@st.composite
def records(draw):
  n = draw(st.integers(0, 40))
  valid = _valid(n)
  kind = draw(st.sampled_from([
      'json', 'avro', 'retry', 'truncate', 'mutate', 'bytes', 'nested',
      'huge', 'unicode', 'wrong_type', 'blank']))
  if kind == 'json':
    return as_json(valid)
  if kind == 'avro':
    return as_avro(valid)
  if kind == 'retry':
    return as_json(dict(valid, trace_id='t-retry-%d' % draw(st.integers(0, 9))))
  encoded = draw(st.sampled_from([as_json, as_avro]))(valid)
  if kind == 'truncate':
    return encoded[:draw(st.integers(0, len(encoded) - 1))]
  if kind == 'mutate':
    at = draw(st.integers(0, len(encoded) - 1))
    return encoded[:at] + bytes([draw(st.integers(0, 255))]) + encoded[at + 1:]
  if kind == 'bytes':
    return draw(st.binary(min_size=1, max_size=80))
  if kind == 'nested':
    depth = draw(st.integers(1, 3000))
    return b'{"payload": ' + b'[' * depth + b']' * depth + b'}'
  field = draw(st.sampled_from(['trace_id', 'source', 'tenant_id', 'event_time',
                                'payload__user_id', 'payload__url']))
  if kind == 'huge':
    value = draw(HUGE)
  elif kind == 'unicode':
    value = draw(WEIRD)
  elif kind == 'blank':
    return draw(st.sampled_from([b'', b'  ', b'\t']))
  else:
    value = draw(st.sampled_from([None, True, 7, 1.5, [], {}, '']))
  data = dict(valid)
  data['payload'] = dict(valid['payload'])
  if field.startswith('payload__'):
    data['payload'][field[9:]] = value
  else:
    data[field] = value
  return json.dumps(data, ensure_ascii=False).encode('utf-8', 'surrogatepass')


def _profiles(folder):
  """A profiles file with the one user the valid records name."""
  path = str(folder / 'profiles.jsonl')
  with open(path, 'w') as f:
    f.write(json.dumps({'tenant_id': 'acme', 'user_id': 'u1', 'tier': 'pro',
                        'region': 'eu', 'updated_at': '2024-01-01T00:00:00Z'}))
  return path


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(records(), min_size=1, max_size=60),
       st.sampled_from(['side_input', 'lookup']))
def test_every_record_ends_in_exactly_one_place(tmp_path_factory, batch, shape):
  folder = tmp_path_factory.mktemp('fuzz-%s' % uuid.uuid4().hex[:6])
  db = str(folder / 'w.duckdb')
  # 'lookup': the events batches through Beam's Enrichment (lookups in the
  # profiles table) instead of the side input.
  flags = {} if shape == 'side_input' else {'enrichment': 'lookup',
                                        'profiles': _profiles(folder)}
  opts = options(hot_sink='duckdb:' + db, cold_path=str(folder / 'cold'),
                 **flags)
  pipeline = beam.Pipeline(options=opts)
  build(pipeline, opts, source=pipeline | beam.Create(
      [RawRecord(data, 'fuzz:%d' % i) for i, data in enumerate(batch)]))
  result = pipeline.run()
  result.wait_until_finish()
  counts = read_counters(result)
  blank = sum(1 for data in batch if not data.strip())
  assert counts['input_records'] == len(batch) - blank
  assert counts['blank_lines'] == blank
  events, letters = 0, []
  if os.path.exists(db):  # nothing to commit: no file
    events = query(db, 'SELECT count(*) FROM events')[0][0]
    letters = [raw_bytes(text, encoding) for text, encoding in query(
        db, 'SELECT raw, raw_encoding FROM dead_letters')]
  assert events == counts['events_written']
  assert events + counts['duplicates'] + len(letters) == len(batch) - blank
  # every letter keeps an input record's exact bytes
  assert set(letters) <= set(batch)
