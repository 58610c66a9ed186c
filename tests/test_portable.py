"""The batch pipeline through PortableRunner against Beam's own Python job
service (LOOPBACK workers): the same rows and counts as the FnApiRunner run."""
import os

from pipelines.generate import generate
from tests.cli import metrics, query, run_module


def test_portable_runner_gives_the_direct_runner_results(job_service, tmp_path):
  data = str(tmp_path / 'data')
  manifest = generate(data, events=600, users=20, tenants=2, files=2, seed=21)
  results = {}
  for runner in ('FnApiRunner', 'PortableRunner'):
    db = str(tmp_path / ('%s.duckdb' % runner))
    extra = []
    if runner == 'PortableRunner':
      extra = ['--job_endpoint', job_service.endpoint,
               '--environment_type', 'LOOPBACK']
    run_module('pipelines.analytics', '--input',
               os.path.join(data, 'events', '*.jsonl'), '--profiles',
               os.path.join(data, 'profiles.jsonl'), '--hot_sink', 'duckdb:' + db,
               '--cold_path', db + '.cold', '--runner', runner, *extra)
    counts = metrics(db)
    events = query(db, 'SELECT count(*) FROM events')[0][0]
    letters = query(db, 'SELECT count(*) FROM dead_letters')[0][0]
    assert counts['input_records'] == manifest['records']
    assert events + counts['duplicates'] + letters == manifest['records']
    results[runner] = [query(db, sql) for sql in (
        'SELECT idempotency_key, user_tier, user_region, payload FROM events '
        'ORDER BY 1',
        'SELECT dead_letter_id, error_kind FROM dead_letters ORDER BY 1',
        'SELECT window_start, tenant_id, event_type, event_count '
        'FROM event_counts_1m ORDER BY 1, 2, 3')]
  assert results['PortableRunner'] == results['FnApiRunner']
