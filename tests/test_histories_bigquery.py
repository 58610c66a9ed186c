"""Exact across runs on the BigQuery hot sink (the local emulator, a real
BigQuery API): the histories of `test_histories.py`, recounted the same way,
in SQL, over the BigQuery tables read back (each view from `events`), and
the cold tier's keys against the hot tier's."""
import os
import shutil
import threading

import duckdb
import pyarrow as pa

from pipelines.verify import view_mismatches
from tests.cli import run_module
from tests.test_histories import (VIEWS, _cold_keys, _raw, _stream_run,
                                  stream)  # noqa: F401 (a fixture)


def _run(data, files, dataset, cold, endpoint, name):
  folder = '%s.input-%s' % (cold, name)
  os.makedirs(folder)
  for path in files:
    shutil.copy(path, folder)
  return run_module(
      'pipelines.analytics', '--input', os.path.join(folder, '*.jsonl'),
      '--profiles', os.path.join(data, 'profiles.jsonl'),
      '--hot_sink', 'bigquery:test-proj.%s' % dataset,
      '--bigquery_endpoint', endpoint, '--cold_path', cold,
      '--runner', 'FnApiRunner')


def _naive(table: pa.Table) -> pa.Table:
  """BigQuery's UTC timestamps as DuckDB TIMESTAMPs (UTC, no zone)."""
  columns = []
  for field in table.schema:
    column = table.column(field.name)
    if pa.types.is_timestamp(field.type):
      column = column.cast(pa.timestamp('us'))
    columns.append(column)
  return pa.Table.from_arrays(columns, names=table.schema.names)


def _read_back(client, dataset):
  """The dataset's events and views in an in-memory DuckDB."""
  con = duckdb.connect()
  for name in ('events',) + tuple(VIEWS):
    table = client.query('SELECT * FROM `test-proj.%s.%s`' % (
        dataset, name)).result().to_arrow(create_bqstorage_client=False)
    con.register('%s_arrow' % name, _naive(table))
    con.execute('CREATE TABLE %s AS SELECT * FROM %s_arrow' % (name, name))
  return con


def assert_exact(client, dataset, cold, whole=None):
  con = _read_back(client, dataset)
  assert view_mismatches(con) == {view: 0 for view in VIEWS}
  hot = sorted(r[0] for r in con.execute(
      'SELECT idempotency_key FROM events').fetchall())
  assert hot and _cold_keys(cold) == hot, 'cold tier: each stored event once'
  assert list(client.query('SELECT COUNT(*) FROM `test-proj.%s.cold_outbox`'
                           % dataset).result())[0][0] == 0
  if whole is not None:
    with duckdb.connect(whole, read_only=True) as one:
      for view, columns in VIEWS.items():
        sql = 'SELECT %s FROM %s ORDER BY ALL' % (columns, view)
        assert con.execute(sql).fetchall() == one.execute(sql).fetchall(), view


def test_two_runs_in_sequence_then_an_overlapping_backfill_and_a_rerun(
    bigquery_emulator, stream, tmp_path):
  data, files, whole = stream
  cold = str(tmp_path / 'cold')
  for name, part in enumerate((files[:2], files[2:], files[1:3], files)):
    _run(data, part, 'seq', cold, bigquery_emulator.endpoint, name)
  assert_exact(bigquery_emulator.client(), 'seq', cold, whole)


def test_two_runs_at_once_over_the_halves(bigquery_emulator, stream, tmp_path):
  data, files, whole = stream
  cold = str(tmp_path / 'cold')
  failures = []

  def run(part, name):
    try:
      _run(data, part, 'both', cold, bigquery_emulator.endpoint, name)
    except Exception as e:  # the failed command's output, or the test's error
      failures.append(e)
  runs = [threading.Thread(target=run, args=(part, name))
          for name, part in enumerate((files[:2], files[2:]))]
  for thread in runs:
    thread.start()
  for thread in runs:
    thread.join()
  assert not failures, failures
  assert_exact(bigquery_emulator.client(), 'both', cold, whole)


def test_a_restarted_stream_adds_late_events_to_windows_from_before(
    bigquery_emulator, tmp_path):
  cold = str(tmp_path / 'cold')
  flags = dict(hot_sink='bigquery:test-proj.restart', cold_path=cold,
               bigquery_endpoint=bigquery_emulator.endpoint)
  _stream_run(None, None, [[_raw(5, 'u1', 5), _raw(10, 'u2', 10)],
                           [_raw(130, 'u3', 130)]], [120, 200], **flags)
  counts = _stream_run(None, None, [
      [_raw(20, 'u4', 300), _raw(5, 'u1', 301)],
      [_raw(40, 'u5', 320), _raw(140, 'u6', 330)],
      [_raw(-90000, 'old', 400)], [_raw(-90000, 'old', 401)]],
      [310, 340, 500, 600], **flags)
  client = bigquery_emulator.client()
  assert_exact(client, 'restart', cold)
  rows = sorted(tuple(r) for r in client.query(
      'SELECT FORMAT_TIMESTAMP("%H:%M", window_start), event_count FROM '
      '`test-proj.restart.event_counts_1m`').result())
  assert rows == [('10:00', 4), ('10:02', 2)]
  assert (counts['duplicates'], counts['events_already_stored']) == (1, 1)
