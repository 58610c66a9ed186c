"""The BigQuery hot warehouse against a real BigQuery API (the local emulator):
the whole pipeline with `--hot_sink bigquery:...` gives the DuckDB run's tables
row for row, a rerun adds nothing, tables are partitioned and clustered, and a
row BigQuery rejects becomes a `sink_failed` dead letter with BigQuery's error."""
import datetime

import pytest
from google.cloud import bigquery

from pipelines.generate import generate
from schemas import tables
from tests.cli import query, run_module
from tests.helpers import as_json, envelope
from transforms.sinks import bigquery_sink

_WALL_CLOCK = {'processed_at', 'failed_at', 'updated_at'}
_UTC = datetime.timezone.utc


def _normal(value):
  if isinstance(value, datetime.datetime):
    return (value.astimezone(_UTC).replace(tzinfo=None) if value.tzinfo
            else value)
  return value


def _columns(table):
  return [c for c in table.column_names if c not in _WALL_CLOCK]


def _duckdb_rows(db, table):
  cols = _columns(table)
  return sorted(tuple(_normal(v) for v in row) for row in query(
      db, 'SELECT %s FROM %s' % (', '.join(cols), table.name)))


def _bigquery_rows(client, dataset, table):
  cols = _columns(table)
  return sorted(tuple(_normal(v) for v in row) for row in client.query(
      'SELECT %s FROM `test-proj.%s.%s`' % (', '.join(cols), dataset,
                                            table.name)).result())


def _run(data, hot_sink, cold, endpoint, *extra):
  return run_module(
      'pipelines.analytics', '--input', '%s/events/*.jsonl' % data,
      '--profiles', '%s/profiles.jsonl' % data, '--hot_sink', hot_sink,
      '--bigquery_endpoint', endpoint, '--cold_path', cold,
      '--runner', 'FnApiRunner', *extra).stdout


@pytest.fixture(scope='module')
def both_runs(bigquery_emulator, tmp_path_factory):
  base = tmp_path_factory.mktemp('bq-sink')
  data = str(base / 'data')
  generate(data, events=500, users=20, tenants=2, files=2, seed=11)
  db = str(base / 'w.duckdb')
  _run(data, 'duckdb:' + db, str(base / 'cold-duck'), bigquery_emulator.endpoint)
  out = _run(data, 'bigquery:test-proj.hot', str(base / 'cold-bq'),
             bigquery_emulator.endpoint)
  return data, db, out, base


@pytest.mark.parametrize('table', [tables.EVENTS, tables.DEAD_LETTERS]
                         + list(tables.VIEW_TABLES), ids=lambda t: t.name)
def test_bigquery_tables_equal_the_duckdb_run(bigquery_emulator, both_runs, table):
  _, db, _, _ = both_runs
  expected = _duckdb_rows(db, table)
  assert expected, 'the DuckDB run wrote no %s rows' % table.name
  assert _bigquery_rows(bigquery_emulator.client(), 'hot', table) == expected


def test_rerun_adds_nothing_and_metrics_are_written(bigquery_emulator, both_runs):
  data, _, first, base = both_runs
  client = bigquery_emulator.client()

  def counts():
    return {t: list(client.query('SELECT COUNT(*) FROM `test-proj.hot.%s`' % t)
                    .result())[0][0] for t in tables.TABLES if t != 'pipeline_metrics'}
  before = counts()
  again = _run(data, 'bigquery:test-proj.hot', str(base / 'cold-bq'),
               bigquery_emulator.endpoint)
  written = int(first.split('events written ')[1].split(' ')[0])
  assert 'events written 0 (already stored %d)' % written in again
  assert counts() == before
  names = {row[0] for row in client.query(
      'SELECT DISTINCT name FROM `test-proj.hot.pipeline_metrics`').result()}
  assert {'input_records', 'events_written', 'dlq_depth_malformed'} <= names
  leftovers = [t.table_id for t in client.list_tables('test-proj.hot')
               if t.table_id.startswith('_staging_')]
  assert leftovers == []


def test_tables_are_partitioned_by_day_and_clustered_by_tenant(
    bigquery_emulator, both_runs):
  client = bigquery_emulator.client()
  expected = {'events': 'event_time', 'dead_letters': 'failed_at',
              'user_activity_hourly': 'window_start',
              'event_counts_1m': 'window_start', 'active_users_15m': 'window_start',
              'pipeline_metrics': 'recorded_at'}
  for name, field in expected.items():
    table = client.get_table('test-proj.hot.%s' % name)
    assert (table.time_partitioning.type_, table.time_partitioning.field) == (
        'DAY', field), name
    assert table.clustering_fields == (
        None if name == 'pipeline_metrics' else
        ['tenant_id', 'event_time'] if name == 'events' else ['tenant_id']), name


def test_rejected_row_becomes_a_sink_failed_letter(bigquery_emulator, tmp_path):
  """An operator created `events` with user_id as INT64: BigQuery takes user
  '42' and rejects user 'u1'; the run goes on and nothing is lost."""
  client = bigquery_emulator.client()
  client.create_dataset('test-proj.drift', exists_ok=True)
  schema = [bigquery.SchemaField('user_id', 'INT64') if f.name == 'user_id'
            else f for f in bigquery_sink.bq_schema(tables.EVENTS)]
  client.create_table(bigquery.Table('test-proj.drift.events', schema=schema),
                      exists_ok=True)
  lines = [as_json(envelope(payload__user_id='42')),
           as_json(envelope(payload__user_id='u1'))]
  (tmp_path / 'events').mkdir()
  (tmp_path / 'events' / 'a.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
  (tmp_path / 'profiles.jsonl').write_text('')
  out = _run(str(tmp_path), 'bigquery:test-proj.drift', str(tmp_path / 'cold'),
             bigquery_emulator.endpoint)
  assert 'records read 2' in out and 'events written 1' in out
  assert 'dead letters 1 (sink_failed=1)' in out
  [stored] = list(client.query(
      'SELECT user_id FROM `test-proj.drift.events`').result())
  assert stored[0] == 42
  [letter] = list(client.query(
      'SELECT error_kind, error_stage, error_message, raw, origin '
      'FROM `test-proj.drift.dead_letters`').result())
  assert letter[:2] == ('sink_failed', 'sink')
  assert letter[2].startswith('bigquery rejected the events row: user_id: ')
  assert 'u1' in letter[2]
  assert letter[3] == lines[1].decode() and letter[4].endswith('a.jsonl:2')


def test_streaming_into_bigquery_late_pane_replaces_the_row(bigquery_emulator,
                                                            tmp_path):
  """The streaming scenario of test_streaming.py, with BigQuery as the hot tier:
  commits on a trigger, MERGE of what was staged since the previous one."""
  from tests.test_streaming import run_late_data_stream
  run_late_data_stream(hot_sink='bigquery:test-proj.stream',
                       bigquery_endpoint=bigquery_emulator.endpoint,
                       cold_path=str(tmp_path / 'cold'))
  client = bigquery_emulator.client()

  def rows(sql):
    return [tuple(r) for r in client.query(sql).result()]
  assert rows('SELECT user_id FROM `test-proj.stream.events` ORDER BY 1') == [
      ('u1',), ('u2',), ('u3',), ('u4',)]
  assert rows('SELECT event_count, pane_timing FROM '
              '`test-proj.stream.event_counts_1m`') == [(3, 'LATE')]
  assert rows('SELECT error_kind FROM `test-proj.stream.dead_letters`') == [
      ('late_event',)]


class _FlakyClient(object):
  """The emulator's client, failing the first `failures` inserts the way
  BigQuery reports a transient error (every row `backendError`)."""

  def __init__(self, client, failures):
    self._client, self.failures, self.calls = client, failures, 0

  def insert_rows_json(self, table, rows, row_ids=None):
    self.calls += 1
    if self.failures:
      self.failures -= 1
      return [{'index': i, 'errors': [{'reason': 'backendError', 'location': '',
                                       'message': 'try again'}]}
              for i in range(len(rows))]
    return self._client.insert_rows_json(table, rows, row_ids=row_ids)

  def __getattr__(self, name):
    return getattr(self._client, name)


def _stage_fn(bigquery_emulator, dataset, failures, max_attempts=5):
  from transforms.sinks.bigquery_sink import _StageFn
  fn = _StageFn('test-proj', dataset, bigquery_emulator.endpoint, 'events',
                'flaky', max_attempts=max_attempts, backoff_s=0.01)
  fn.setup()
  fn._client = _FlakyClient(fn._client, failures)
  return fn


def _event_rows():
  from schemas.records import RawRecord
  from schemas.rows import event_row
  from transforms.ingest.decode import decode_and_validate
  now = datetime.datetime.now(_UTC)
  return [event_row(decode_and_validate(RawRecord(as_json(envelope(
      payload__url='/%d' % n))))[0], now) for n in range(3)]


def test_transient_insert_errors_are_retried_without_duplicates(bigquery_emulator):
  fn = _stage_fn(bigquery_emulator, 'flaky', failures=2)
  markers = list(fn.process(_event_rows()))
  assert markers[0] == ('commit', ('events', None))
  # and the rows it staged, as the run's counts (`tallies.py`)
  assert markers[1][1][0] == '_tally' and markers[1][1][1]['counts'] == {
      'events_staged': 3}
  assert fn._client.calls == 3
  staged = list(bigquery_emulator.client().query(
      'SELECT COUNT(*), COUNT(DISTINCT idempotency_key) FROM '
      '`test-proj.flaky._staging_events_flaky`').result())[0]
  assert tuple(staged) == (3, 3)


def test_transient_errors_outlasting_the_attempts_fail_the_bundle(bigquery_emulator):
  fn = _stage_fn(bigquery_emulator, 'flaky2', failures=5, max_attempts=3)
  with pytest.raises(IOError, match='still rejected as transient after 3'):
    list(fn.process(_event_rows()))
