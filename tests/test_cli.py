"""End to end: the real command on generated data, outputs read back from DuckDB."""
import datetime
import gc
import os
import subprocess
import sys

import pytest

from pipelines.checks import UsageError, run_command
from pipelines.generate import generate
from tests.cli import ROOT, metrics, query, run_module
from tests.helpers import newest_profile_rows

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
  steps = [l for l in done.stdout.splitlines() if l.startswith('time per step')]
  assert len(steps) == 1 and 'DecodeAndValidate/' in steps[0], done.stdout
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
    ('--duckdb_memory_limit', ['--duckdb_memory_limit', 'lots']),
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
  newest = newest_profile_rows(os.path.join(sample_dir, 'profiles.jsonl'))
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


def _plain_python_views(db):
  """The three views computed in plain Python from the stored events."""
  hourly, minute, active = {}, {}, {}
  for tenant, user, event_type, t in query(
      db, 'SELECT tenant_id, user_id, event_type, event_time FROM events'):
    epoch = int((t - datetime.datetime(1970, 1, 1)).total_seconds())
    hour = epoch - epoch % 3600
    count, last = hourly.get((hour, tenant, user), (0, t))
    hourly[(hour, tenant, user)] = (count + 1, max(last, t))
    key = (epoch - epoch % 60, tenant, event_type)
    minute[key] = minute.get(key, 0) + 1
    first = epoch - epoch % 300
    for start in (first, first - 300, first - 600):
      active.setdefault((start, tenant), set()).add(user)
  return ({k: v for k, v in hourly.items()}, minute,
          {k: len(v) for k, v in active.items()})


def _epoch(t):
  return int((t - datetime.datetime(1970, 1, 1)).total_seconds())


def test_views_equal_a_plain_python_computation(sample, tmp_path):
  sample_dir, _ = sample
  db = str(tmp_path / 'w.duckdb')
  _run(sample_dir, db)
  hourly, minute, active = _plain_python_views(db)
  got = {(_epoch(ws), t, u): (n, last) for ws, we, t, u, n, last in query(
      db, 'SELECT window_start, window_end, tenant_id, user_id, event_count, '
      'last_event_time FROM user_activity_hourly')}
  assert got == hourly
  got = {(_epoch(ws), t, e): n for ws, t, e, n in query(
      db, 'SELECT window_start, tenant_id, event_type, event_count '
      'FROM event_counts_1m')}
  assert got == minute
  got = {(_epoch(ws), t): n for ws, t, n in query(
      db, 'SELECT window_start, tenant_id, active_users FROM active_users_15m')}
  assert got == active
  widths = query(db, "SELECT DISTINCT epoch(window_end) - epoch(window_start) "
                 "FROM active_users_15m")
  assert widths == [(900,)]


def _cold(db):
  import pyarrow.dataset as ds
  root = os.path.join(db + '.cold', 'events')
  table = ds.dataset(root, format='parquet', partitioning='hive').to_table()
  return table


def test_cold_tier_holds_exactly_the_hot_events_in_the_right_folders(sample, tmp_path):
  import glob
  import pyarrow.parquet as pq
  sample_dir, _ = sample
  db = str(tmp_path / 'w.duckdb')
  _run(sample_dir, db)
  hot = dict(query(db, "SELECT idempotency_key, strftime(ingested_at, '%Y-%m-%d') "
                   "|| '/' || tenant_id FROM events"))
  files = sorted(glob.glob(os.path.join(db + '.cold', 'events', '*', '*', '*')))
  assert files and all(f.endswith('.parquet') for f in files), 'no temp files left'
  seen = {}
  for path in files:
    date_dir, tenant_dir = path.split(os.sep)[-3:-1]
    for key, tenant, ingested in zip(*[pq.read_table(path).column(c).to_pylist()
                                       for c in ('idempotency_key', 'tenant_id',
                                                 'ingested_at')]):
      assert key not in seen, 'one cold row per key'
      seen[key] = '%s/%s' % (date_dir.split('=')[1], tenant_dir.split('=')[1])
      assert seen[key] == '%s/%s' % (ingested.strftime('%Y-%m-%d'), tenant)
  assert seen == hot
  before = {f: open(f, 'rb').read() for f in files}
  _run(sample_dir, db)
  after_files = sorted(glob.glob(os.path.join(db + '.cold', 'events', '*', '*', '*')))
  assert after_files == files, 'a rerun writes the same files, not more'
  cold = _cold(db)
  assert sorted(cold.column('idempotency_key').to_pylist()) == sorted(hot)
  assert len(before) == len(after_files)


def test_bounded_and_streaming_graphs_agree(tmp_path):
  """The bounded graph (events as Arrow tables, one commit) and the
  streaming one (`Batch`es of events, sharded expiring dedup, the late-data
  gate, commits on a trigger) store the same rows and counts."""
  data = str(tmp_path / 'data')
  generate(data, events=800, users=20, tenants=2, files=2, seed=5,
           bad_rate=0.08, blank_rate=0.01)
  results = {}
  runner = {'bounded': ['--runner', 'FnApiRunner'],
            'stream': ['--runner', 'BundleBasedDirectRunner', '--streaming']}
  for mode in ('bounded', 'stream'):
    db = str(tmp_path / ('%s.duckdb' % mode))
    run_module('pipelines.analytics', '--input',
               os.path.join(data, 'events', '*.jsonl'), '--profiles',
               os.path.join(data, 'profiles.jsonl'), '--hot_sink', 'duckdb:' + db,
               '--cold_path', db + '.cold', '--read_batch_size', '97',
               *runner[mode])
    results[mode] = [query(db, sql) for sql in (
        'SELECT * EXCLUDE (processed_at) FROM events ORDER BY idempotency_key',
        'SELECT dead_letter_id, error_kind, error_message, raw FROM dead_letters '
        'ORDER BY 1',
        'SELECT window_start, tenant_id, user_id, event_count, last_event_time '
        'FROM user_activity_hourly ORDER BY 1, 2, 3',
        'SELECT window_start, tenant_id, event_type, event_count '
        'FROM event_counts_1m ORDER BY 1, 2, 3',
        'SELECT window_start, tenant_id, active_users FROM active_users_15m '
        'ORDER BY 1, 2',
        "SELECT name, value FROM pipeline_metrics WHERE name NOT LIKE 'cold%' "
        "AND name <> 'run_duration_ms' ORDER BY 1")]
    cold = _cold(db).drop_columns(['processed_at']).sort_by('idempotency_key')
    results[mode].append(cold.to_pylist())
    assert len(results[mode][-1]) == len(results[mode][0]) > 0
    kinds = {r[1] for r in results[mode][1]}
    assert kinds == {'oversized', 'malformed', 'unsupported_schema_version',
                     'unknown_event_type', 'schema_violation'}
  assert results['bounded'] == results['stream']


@pytest.mark.parametrize('chosen, expected', [(None, 'system'),
                                              ('mimalloc', 'mimalloc')])
def test_the_job_allocates_arrow_from_malloc_unless_told(chosen, expected):
  env = {k: v for k, v in os.environ.items() if k != 'ARROW_DEFAULT_MEMORY_POOL'}
  if chosen:
    env['ARROW_DEFAULT_MEMORY_POOL'] = chosen
  done = subprocess.run(
      [sys.executable, '-c', 'import pipelines.analytics, pyarrow; '
       'print(pyarrow.default_memory_pool().backend_name)'],
      cwd=ROOT, env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True,
      check=True)
  assert done.stdout.strip() == expected


@pytest.mark.parametrize('fails', [False, True])
def test_a_command_freezes_what_is_alive_when_it_ends(fails):
  """What a command leaves is frozen out of the collector, so the exit does not
  walk every object importing Beam made; a failing command too."""
  def run(argv):
    if fails:
      raise UsageError('--input: no such file')
  gc.unfreeze()
  try:
    assert gc.get_freeze_count() == 0
    if fails:
      with pytest.raises(SystemExit) as exited:
        run_command(run, [])
      assert exited.value.code == UsageError.exit_code
    else:
      run_command(run, [])
    assert gc.get_freeze_count() > 0
  finally:
    gc.unfreeze()


def test_help_lists_every_flag_grouped_with_its_default():
  from pipelines.options import AnalyticsOptions, HELP_GROUPS
  import argparse
  done = run_module('pipelines.analytics', '--help')
  text = done.stdout
  flags = argparse.ArgumentParser(add_help=False)
  AnalyticsOptions._add_argparse_args(flags)
  names = {a.dest for a in flags._actions}
  grouped = [n for _, group in HELP_GROUPS for n in group]
  assert sorted(grouped) == sorted(names), 'every flag in exactly one group'
  headers = [text.index('\n%s:\n' % title) for title, _ in HELP_GROUPS]
  assert headers == sorted(headers)
  for name in names:
    assert '--%s ' % name in text
  assert text.count('Default:') >= len(names) - 1  # --input: required instead
  assert '--runner' in text and 'pipeline_options' in text
  assert done.stderr == ''


def test_a_dataflow_dry_run_builds_the_job_through_the_command_offline():
  done = run_module(
      'pipelines.analytics', '--runner', 'DataflowRunner', '--dry_run=True',
      '--project', 'my-project', '--region', 'us-central1', '--temp_location',
      'gs://my-bucket/tmp', '--streaming', '--input_subscription',
      'projects/my-project/subscriptions/events', '--hot_sink',
      'bigquery:my-project.analytics', '--cold_path', 'gs://my-bucket/cold',
      timeout=120)
  assert done.stdout.startswith('dry run ') and 'not submitted' in done.stdout
  assert done.stderr == ''


def test_a_local_run_prints_only_its_summary(tmp_path):
  data = str(tmp_path / 'data')
  generate(data, events=300, users=10, tenants=2, files=2, seed=3)
  done = run_module('pipelines.analytics', '--input', data + '/events/*.jsonl',
                    '--hot_sink', 'duckdb:' + str(tmp_path / 'w.duckdb'),
                    '--cold_path', str(tmp_path / 'cold'))
  assert done.stderr == '', done.stderr  # no gRPC or Beam log lines
  lines = done.stdout.splitlines()
  assert len(lines) == 2 and lines[0].startswith('run ') and \
      lines[1].startswith('time per step')
