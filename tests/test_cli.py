"""End to end: the real command on generated data, outputs read back from DuckDB."""
import json
import os

import pytest

from pipelines.generate import generate
from tests.cli import metrics, query, run_module

EVENT_COLUMNS = ('idempotency_key, trace_id, schema_version, event_type, source, '
                 'tenant_id, user_id, event_time, ingested_at, user_tier, '
                 'user_region, payload')


@pytest.fixture(scope='module')
def sample(tmp_path_factory):
  out = tmp_path_factory.mktemp('sample')
  manifest = generate(str(out), events=1500, users=40, tenants=3, files=3, seed=11)
  return str(out), manifest


def _run(sample_dir, db, *extra):
  return run_module(
      'pipelines.analytics', '--input', os.path.join(sample_dir, 'events', '*.jsonl'),
      '--profiles', os.path.join(sample_dir, 'profiles.jsonl'),
      '--hot_sink', 'duckdb:' + db, '--cold_path', db + '.cold',
      '--runner', 'FnApiRunner', *extra)


def _snapshot(db):
  return (query(db, 'SELECT %s FROM events ORDER BY idempotency_key' % EVENT_COLUMNS),
          query(db, 'SELECT dead_letter_id, error_kind, raw FROM dead_letters '
                'ORDER BY dead_letter_id'))


def test_every_record_is_accounted_for(sample, tmp_path):
  sample_dir, manifest = sample
  db = str(tmp_path / 'w.duckdb')
  done = _run(sample_dir, db)
  assert 'records read %d' % manifest['records'] in done.stdout
  counts = metrics(db)
  events = query(db, 'SELECT count(*) FROM events')[0][0]
  letters = query(db, "SELECT count(*) FROM dead_letters "
                  "WHERE error_kind <> 'late_event'")[0][0]
  assert counts['input_records'] == manifest['records']
  assert counts['blank_lines'] == manifest['blank_lines']
  assert events + counts['duplicates'] + letters == counts['input_records']
  # and against the generator's own independent count
  assert events == manifest['unique_events']
  assert counts['duplicates'] == manifest['duplicates']
  by_kind = dict(query(db, 'SELECT error_kind, count(*) FROM dead_letters '
                       'GROUP BY 1'))
  assert by_kind == manifest['bad']
  for kind, n in manifest['bad'].items():
    assert counts['dead_letters_' + kind] == n
  assert not os.path.exists(db + '.staging'), 'staging files are cleaned up'


def test_rerun_leaves_the_same_rows(sample, tmp_path):
  sample_dir, _ = sample
  db = str(tmp_path / 'w.duckdb')
  _run(sample_dir, db)
  first = _snapshot(db)
  _run(sample_dir, db)
  assert _snapshot(db) == first
  counts = metrics(db)
  assert counts['events_written'] == 0
  assert counts['events_already_stored'] == len(first[0])


def test_multi_process_run_loses_and_doubles_nothing(sample, tmp_path):
  sample_dir, manifest = sample
  single, multi = str(tmp_path / 'single.duckdb'), str(tmp_path / 'multi.duckdb')
  _run(sample_dir, single)
  _run(sample_dir, multi, '--direct_num_workers=2',
       '--direct_running_mode=multi_processing')
  assert query(multi, 'SELECT count(*) FROM events')[0][0] == \
      manifest['unique_events']
  # The same rows as a single-process run (trace ids of retries may differ).
  columns = 'idempotency_key, tenant_id, user_id, event_time, payload'
  assert query(multi, 'SELECT %s FROM events ORDER BY 1' % columns) == \
      query(single, 'SELECT %s FROM events ORDER BY 1' % columns)
  assert _snapshot(multi)[1] == _snapshot(single)[1]


@pytest.mark.parametrize('flag, args', [
    ('--input', ['--input', '/nonexistent/*.jsonl']),
    ('--allowed_lateness', ['--allowed_lateness', 'soon']),
    ('--dedup_ttl', ['--dedup_ttl=-5']),
    ('--hot_sink', ['--hot_sink', 'sqlite:x.db']),
    ('--profiles', ['--profiles', '/nonexistent/profiles.jsonl']),
    ('--inptu', ['--inptu', 'x']),
])
def test_bad_flag_stops_before_start_naming_the_flag(sample, tmp_path, flag, args):
  sample_dir, _ = sample
  db = str(tmp_path / 'out' / 'w.duckdb')
  base = {'--input': os.path.join(sample_dir, 'events', '*.jsonl'),
          '--hot_sink': 'duckdb:' + db, '--cold_path': str(tmp_path / 'out' / 'cold'),
          '--runner': 'FnApiRunner'}
  argv = []
  for key, value in base.items():
    if key not in args and not any(a.startswith(key + '=') for a in args):
      argv += [key, value]
  done = run_module('pipelines.analytics', *(argv + args), check=False)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and flag in lines[0], done.stderr
  assert not os.path.exists(tmp_path / 'out'), 'nothing is written'


@pytest.mark.parametrize('mode', ['side_input', 'lookup'])
def test_enrichment_equals_a_plain_python_join(sample, tmp_path, mode):
  sample_dir, _ = sample
  db = str(tmp_path / 'w.duckdb')
  _run(sample_dir, db, '--enrichment', mode)
  newest = {}
  with open(os.path.join(sample_dir, 'profiles.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      key = (row['tenant_id'], row['user_id'])
      if key not in newest or row['updated_at'] > newest[key]['updated_at']:
        newest[key] = row
  rows = query(db, 'SELECT tenant_id, user_id, user_tier, user_region FROM events')
  assert rows
  fallbacks = 0
  for tenant, user, tier, region in rows:
    profile = newest.get((tenant, user))
    if profile is None:
      fallbacks += 1
      assert (tier, region) == ('unknown', 'unknown')
    else:
      assert (tier, region) == (profile['tier'], profile['region'])
  assert 0 < fallbacks < len(rows)
  assert metrics(db)['enrichment_fallbacks'] == fallbacks
