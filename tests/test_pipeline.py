"""Pipeline tests: the graph on `beam.Create` sources, runner pinned to FnApiRunner."""
import apache_beam as beam
import duckdb
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.analytics import build
from schemas.records import RawRecord
from tests.helpers import as_avro, as_json, envelope, options
from transforms.batch import Batch
from transforms.dedup.shards import DedupBatches
from transforms.ingest.decode import DEAD_LETTER_TAG
from transforms.ingest.parallel_decode import DecodeTables


class _Row(object):
  """An events batch's row, read by attribute."""

  def __init__(self, row):
    self.__dict__.update(row)


def _decoded(p, raw, label='Records'):
  """`raw` decoded in batches of 3, as the graph does: (events batches,
  letters)."""
  out = (p | label >> beam.Create([Batch(raw[i:i + 3])
                                   for i in range(0, len(raw), 3)])
         | DecodeTables())
  return out.events, out[DEAD_LETTER_TAG]


def _each(batches, label='Each'):
  return batches | label >> beam.FlatMap(
      lambda table: [_Row(row) for row in table.to_pylist()])


def _mixed_records():
  good = [envelope(trace_id='t-%d' % i, payload__url='/p%d' % i) for i in range(3)]
  raw = [as_json(e) for e in good] + [
      as_avro(envelope('click')), b'', b'  ', b'{bad', b'x' * 70000,
      as_json(envelope(schema_version='v2')),
      as_json(dict(envelope(), event_type='signup')),
      as_json(envelope(tenant_id='BAD'))]
  return good, raw


def test_decode_and_validate_routes_events_and_dead_letters():
  good, raw = _mixed_records()
  with TestPipeline(options=options()) as p:
    events, letters = _decoded(p, raw)
    assert_that(_each(events) | 'Keys' >> beam.Map(lambda e: e.idempotency_key),
                equal_to([e['idempotency_key'] for e in good] +
                         [envelope('click')['idempotency_key']]),
                label='events')
    assert_that(letters | 'Kinds' >> beam.Map(lambda d: d.error_kind),
                equal_to(['malformed', 'oversized', 'unsupported_schema_version',
                          'unknown_event_type', 'schema_violation']),
                label='dead_letter_kinds')


def test_dedup_drops_retries_across_batches_and_shards():
  first = envelope(trace_id='t-a')
  retry = dict(first, trace_id='t-b')
  other = envelope(payload__url='/other')
  raw = [as_json(first), as_json(other)] * 3 + [as_json(retry)] * 2
  with TestPipeline(options=options()) as p:
    events, _ = _decoded(p, raw)
    # Reshuffle spreads the copies over bundles before dedup.
    kept = (events | beam.Reshuffle() | DedupBatches(86400, shards=3)).events
    assert_that(_each(kept) | beam.Map(lambda e: e.idempotency_key),
                equal_to([first['idempotency_key'], other['idempotency_key']]))


def test_invalid_copy_does_not_hide_a_valid_copy():
  good = envelope()
  bad = dict(good, tenant_id='BAD')
  with TestPipeline(options=options()) as p:
    events, letters = _decoded(p, [as_json(bad), as_json(good)])
    kept = (events | DedupBatches(86400)).events
    assert_that(_each(kept) | 'K' >> beam.Map(lambda e: e.trace_id),
                equal_to(['t-1']), label='valid_copy_kept')
    assert_that(letters | 'D' >> beam.Map(lambda d: d.error_kind),
                equal_to(['schema_violation']), label='invalid_copy_dead')


def test_build_with_injected_source_writes_duckdb(tmp_path):
  good, raw = _mixed_records()
  db = str(tmp_path / 'w.duckdb')
  opts = options(hot_sink='duckdb:' + db, cold_path=str(tmp_path / 'cold'))
  with TestPipeline(options=opts) as p:
    source = p | beam.Create(
        [RawRecord(r, 'mem:%d' % i) for i, r in enumerate(raw)])
    outputs = build(p, opts, source=source)
    assert_that(outputs['dead_letters'] | beam.Map(lambda d: d.origin),
                equal_to(['mem:6', 'mem:7', 'mem:8', 'mem:9', 'mem:10']))
  con = duckdb.connect(db, read_only=True)
  keys = {r[0] for r in con.execute('SELECT idempotency_key FROM events').fetchall()}
  assert keys == {e['idempotency_key'] for e in good} | {
      envelope('click')['idempotency_key']}
  assert con.execute('SELECT count(*) FROM dead_letters').fetchone()[0] == 5
  tiers = con.execute('SELECT DISTINCT user_tier, user_region FROM events').fetchall()
  assert tiers == [('unknown', 'unknown')]


def test_build_batched_with_injected_source_and_lookups(tmp_path):
  good, raw = _mixed_records()
  profiles = tmp_path / 'profiles.jsonl'
  profiles.write_text('{"tenant_id": "acme", "user_id": "u1", "tier": "pro", '
                      '"region": "eu", "updated_at": "2024-01-01T00:00:00Z"}\n')
  db = str(tmp_path / 'w.duckdb')
  opts = options(hot_sink='duckdb:' + db, cold_path=str(tmp_path / 'cold'),
                 enrichment='lookup', profiles=str(profiles))
  with TestPipeline(options=opts) as p:
    build(p, opts, source=p | beam.Create(raw))
  con = duckdb.connect(db, read_only=True)
  tiers = con.execute('SELECT DISTINCT user_tier FROM events').fetchall()
  assert tiers == [('pro',)]
  assert con.execute('SELECT count(*) FROM events').fetchone()[0] == len(good) + 1


def test_the_pipeline_records_its_own_counters_on_any_runner(tmp_path):
  """The graph alone (no launcher reading the runner's counters, as on
  Dataflow or Flink): its commits write the run's counters to
  pipeline_metrics, and they add up to the generated input."""
  from pipelines.generate import generate
  from pipelines.options import AnalyticsOptions
  from pipelines.summary import stored_counters
  data = str(tmp_path / 'data')
  manifest = generate(data, events=400, users=10, tenants=2, files=2, seed=4)
  db = str(tmp_path / 'w.duckdb')
  opts = options(input=data + '/events/*.jsonl', hot_sink='duckdb:' + db,
                 cold_path=str(tmp_path / 'cold'), run_id='run-under-test')
  pipeline = beam.Pipeline(options=opts)
  build(pipeline, opts)
  pipeline.run().wait_until_finish()
  assert opts.view_as(AnalyticsOptions).run_id == 'run-under-test'
  counts = stored_counters(db, 'run-under-test')
  bad = sum(manifest['bad'].values())
  assert counts['input_records'] == manifest['records']
  assert counts['blank_lines'] == manifest['blank_lines']
  assert counts['events_written'] == manifest['unique_events']
  assert counts['duplicates'] == manifest['duplicates']
  assert counts['dead_letters'] == counts['dead_letters_written'] == bad
  assert counts['events_already_stored'] == 0
  assert counts['cold_rows_written'] == manifest['unique_events']
  assert {k: counts['dead_letters_' + k] for k in manifest['bad']} == \
      manifest['bad']
