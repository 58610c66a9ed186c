"""The DuckDB hot warehouse sink: staged Parquet, one transactional commit.

Rows of every table are batched (`BatchElements`) and written as content-named
Parquet staging files by any worker. The file paths are then gathered on one key
and a single commit step loads them all in one DuckDB transaction:

* `events`: the staged rows whose key is not stored yet are inserted (first
  write wins), so a rerun or a retried bundle leaves the same rows; rows
  already stored are counted, not lost. In the same transaction their late
  letters are written, their rows go to the cold tier's outbox, and the views
  grow by exactly them (`view_sql`): exact whatever the history of runs.
* `dead_letters`: insert, keyed by a stable id (kind, origin, bytes).

After the commit, the outbox is exported to the cold tier (`cold_sink`).
One writer process, one transaction: a multi-process run cannot hit DuckDB's file
lock, and a failed commit leaves nothing half-written (the runner retries it; the
staging files are removed only after the commit).
"""
import datetime
import logging
import os
import uuid

import apache_beam as beam
import duckdb

from schemas import tables
from schemas.rows import REPLAY_ORIGIN
from apache_beam.metrics import Metrics

from transforms import counters

from transforms.views import sql as view_sql
from transforms.sinks.duckdb_memory import (MEMORY_LIMIT_PATTERN, commit_memory_limit,
                                      out_of_memory)
from transforms.tallies import apply_tallies
from transforms.sinks.cold_sink import COLD_FILES, export_outbox
from transforms.sinks.duckdb_connection import connect, staging_dir_of
from transforms.sinks.files import remove_empty_local_folders
from transforms.sinks.staging import (CommitCounters, commit_counts, count_staged,
                                split_markers, stage_and_commit, staged_table,
                                staged_tally, write_staging_file)

__all__ = ['WriteToDuckDB', 'commit_staged',
           'commit_memory_limit', 'MEMORY_LIMIT_PATTERN',
           'read_outbox', 'drain_outbox', 'new_commit_id', 'NO_FLOOR']

_COMMIT_KEY = 'commit'
def _rollback(con, error):
  """Rolls back after `error`; a database DuckDB invalidated on a failed
  commit refuses even that and is discarded on close, keeping the last
  committed state. The caller re-raises `error` either way."""
  try:
    con.execute('ROLLBACK')
  except duckdb.Error as refused:
    logging.warning('DuckDB could not roll back after %r: %s', error, refused)


def _select_list(table):
  return ', '.join(table.column_names)


def _letters_sql(files_sql):
  """A new letter is inserted once. A replayed record that failed again
  (origin `replay:<id>`) updates its letter: the new reason, the new time
  and one more replay; the original bytes stay as they were."""
  columns = _select_list(tables.DEAD_LETTERS)
  return ('INSERT INTO dead_letters (%s) SELECT %s FROM read_parquet(%s) '
          'QUALIFY row_number() OVER (PARTITION BY dead_letter_id '
          'ORDER BY failed_at) = 1 ON CONFLICT (dead_letter_id) DO UPDATE SET '
          'error_kind = excluded.error_kind, '
          'error_stage = excluded.error_stage, '
          'error_message = excluded.error_message, '
          'failed_at = excluded.failed_at, '
          'replay_count = dead_letters.replay_count + 1 '
          "WHERE starts_with(excluded.origin, '%s')" % (
              columns, columns, files_sql, REPLAY_ORIGIN))


def _late_letters_sql():
  """The late letters of the events this commit stores (JSON rows)."""
  picks = []
  for column in tables.DEAD_LETTERS.columns:
    value = "json_extract_string(late_letter, '$.%s')" % column.name
    if column.type in ('TIMESTAMP', 'INT64'):
      value = 'CAST(%s AS %s)' % (value, tables._DUCKDB[column.type])
    picks.append(value)
  return ('INSERT INTO dead_letters (%s) SELECT %s FROM fresh WHERE late_letter '
          'IS NOT NULL ON CONFLICT DO NOTHING' % (
              _select_list(tables.DEAD_LETTERS), ', '.join(picks)))


def _store_events(con, files, commit_id, streaming, floor_us):
  """In the open transaction: stores the staged events not yet stored
  (`fresh`), their late letters, their outbox rows for the cold tier, and
  adds them to the views (`view_sql`). Returns (staged rows, stored)."""
  events = _select_list(tables.EVENTS)
  con.execute(
      'CREATE TEMP TABLE staged_events AS SELECT * FROM read_parquet($files)',
      {'files': files})
  staged = con.execute('SELECT count(*) FROM staged_events').fetchone()[0]
  # One row per key even if a key was staged twice; the earliest copy wins.
  con.execute(
      'CREATE TEMP TABLE fresh AS SELECT s.* FROM staged_events s WHERE NOT '
      'EXISTS (SELECT 1 FROM events e WHERE e.idempotency_key = '
      's.idempotency_key) QUALIFY row_number() OVER (PARTITION BY '
      's.idempotency_key ORDER BY s.processed_at, s.trace_id) = 1')
  stored = con.execute('SELECT count(*) FROM fresh').fetchone()[0]
  if stored:
    con.execute('INSERT INTO events (%s) SELECT %s FROM fresh' % (
        events, events))
    con.execute('INSERT INTO cold_outbox (%s, commit_id) SELECT %s, $c FROM '
                'fresh' % (events, events), {'c': commit_id})
  letters_before = con.execute('SELECT count(*) FROM dead_letters').fetchone()[0]
  con.execute(_late_letters_sql())
  late = con.execute(
      'SELECT count(*) FROM dead_letters').fetchone()[0] - letters_before
  now = utcnow_naive()
  for sql in view_sql.duckdb_view_statements(streaming):
    params = {name: value for name, value in (('now', now), ('floor', floor_us))
              if '$' + name in sql}
    con.execute(sql, params)
  return staged, stored, late


def utcnow_naive():
  return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# The watermark as a commit knows it before any gate said more: none passed.
NO_FLOOR = -2 ** 63


def commit_staged(db_path: str, staged, memory_limit=None, streaming=False,
                  floor_us=NO_FLOOR, commit_id=None, run_id=None,
                  tallies=None) -> dict:
  """Commits staged files into DuckDB in one transaction; returns
  {table: (staged rows, rows written)}, with `late_event` letters written
  as `late_letters`.

  `staged` is an iterable of (table name, path): `events` files (with each
  late event's letter, `tables.STAGED_EVENTS`) and `dead_letters` files.
  Paths that no longer exist were committed by an earlier attempt (files are
  removed only after a commit). The events not yet stored are inserted, with
  their rows in the cold tier's outbox (`commit_id`, default a new one) and
  their late letters, and the views grow by them (`view_sql`): a retried
  commit finds its events stored and changes nothing. In streaming the views'
  pane timing follows `floor_us`, the watermark as the gates last reported
  it. `memory_limit` (a DuckDB size, e.g. '1GB', or `auto`, see
  `commit_memory_limit`) bounds what the transaction holds in memory: one
  transaction inserting every row of a large run kept them and the
  primary-key index in memory until COMMIT (measured: ~0.9 GB per million
  events); with a limit DuckDB spills rows to `<db_path>.tmp` (measured on 1.1
  million events: peak 1.27 -> 0.81 GB at 1GB, the commit 3.9 -> 5.2 s). The
  index cannot spill: a limit too small for it fails the commit with a
  `MemoryError`, writing nothing.
  """
  if memory_limit is not None:
    commit_memory_limit(memory_limit, 0)  # refused before anything opens
  by_table = {}
  for name, path in staged:
    if os.path.exists(path):
      by_table.setdefault(name, set()).add(path)
  result = {}
  if not by_table and not streaming and not tallies:
    return result
  files = {name: sorted(paths) for name, paths in by_table.items()}
  commit_id = commit_id or new_commit_id()
  con = connect(db_path)
  limit, staged_rows = None, {}
  try:
    staged_rows = {name: con.execute(
        'SELECT count(*) FROM read_parquet(?)', [files[name]]).fetchone()[0]
        for name in files}
    limit = commit_memory_limit(memory_limit, sum(staged_rows.values()))
    if limit:
      con.execute("SET memory_limit = '%s'" % limit)
    con.execute('BEGIN TRANSACTION')
    try:
      if tables.DEAD_LETTERS.name in files:
        before = con.execute('SELECT count(*) FROM dead_letters').fetchone()[0]
        con.execute(_letters_sql('$files'),
                    {'files': files[tables.DEAD_LETTERS.name]})
        after = con.execute('SELECT count(*) FROM dead_letters').fetchone()[0]
        result[tables.DEAD_LETTERS.name] = (
            staged_rows[tables.DEAD_LETTERS.name], after - before)
      if tables.EVENTS.name in files:
        staged_n, stored, late = _store_events(
            con, files[tables.EVENTS.name], commit_id, streaming, floor_us)
        result[tables.EVENTS.name] = (staged_n, stored)
        result['late_letters'] = (late, late)
      elif streaming:
        for sql in view_sql.duckdb_finalize():
          con.execute(sql, {'floor': floor_us})
      if run_id is not None:
        # The run's counts, with this commit's own: in its transaction.
        apply_tallies(con, run_id, dict(
            tallies or {}, **{'commit:' + commit_id: commit_counts(result)}))
      con.execute('COMMIT')
    except BaseException as error:
      _rollback(con, error)
      raise
  except duckdb.Error as error:
    if out_of_memory(error):
      raise MemoryError(
          'DuckDB ran out of memory committing %d staged rows under '
          'memory_limit=%s: nothing was written and the staging files are '
          'kept; raise --duckdb_memory_limit (or leave it at auto)' % (
              sum(staged_rows.values()), limit)) from error
    raise
  finally:
    con.close()
  committed = [path for paths in files.values() for path in paths]
  for path in committed:
    os.remove(path)
  remove_empty_local_folders({os.path.dirname(path) for path in committed})
  return result


def new_commit_id() -> str:
  """A commit's id: sortable by time, unique."""
  return '%s-%s' % (datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y%m%dT%H%M%S%fZ'), uuid.uuid4().hex[:8])


def read_outbox(db_path: str):
  """{commit_id: the `events` rows that commit stored and the cold tier does
  not have yet (an Arrow table with the cold schema)}."""
  con = connect(db_path)
  try:
    commits = [row[0] for row in con.execute(
        'SELECT DISTINCT commit_id FROM cold_outbox ORDER BY 1').fetchall()]
    result = {}
    for commit_id in commits:
      table = con.sql(
          'SELECT %s FROM cold_outbox WHERE commit_id = $c' % _select_list(
              tables.EVENTS), params={'c': commit_id}).to_arrow_table()
      result[commit_id] = table.cast(tables.arrow_schema(tables.EVENTS))
    return result
  finally:
    con.close()


def drain_outbox(db_path: str, commit_id: str, run_id=None, counts=None):
  """Deletes a commit's outbox rows once the cold tier holds them, and adds
  `counts` (the export's) to the run's `pipeline_metrics`, in one
  transaction."""
  con = connect(db_path)
  try:
    con.execute('BEGIN TRANSACTION')
    con.execute('DELETE FROM cold_outbox WHERE commit_id = ?', [commit_id])
    if run_id is not None and counts:
      apply_tallies(con, run_id, {'cold:' + commit_id: {
          name: n for name, n in counts.items() if n}})
    con.execute('COMMIT')
  finally:
    con.close()


class _StageFn(beam.DoFn):
  """Writes one batch of rows to a content-named staging file."""

  def __init__(self, staging_dir, table_name):
    self._staging_dir = staging_dir
    self._table_name = table_name

  def setup(self):
    self._staged = Metrics.counter(counters.NAMESPACE, counters.EVENTS_STAGED)

  def process(self, rows):
    path = write_staging_file(self._staging_dir, staged_table(self._table_name),
                              rows)
    count_staged(self._staged, self._table_name, rows)
    yield _COMMIT_KEY, (self._table_name, path)
    if self._table_name == tables.EVENTS.name:
      yield _COMMIT_KEY, staged_tally({counters.EVENTS_STAGED: (
          rows.num_rows if hasattr(rows, 'num_rows') else len(rows))})


class _CommitFn(beam.DoFn):
  """The single writer: loads every staged file in one transaction, then
  exports what it stored to the cold tier (`cold_sink.export_outbox`)."""

  def __init__(self, db_path, cold_path, memory_limit=None, streaming=False,
               cold_max_rows=1000000, run_id=None):
    self._db_path, self._cold_path = db_path, cold_path
    self._run_id = run_id
    self._memory_limit = memory_limit
    self._streaming, self._cold_max_rows = streaming, cold_max_rows

  def setup(self):
    self._counters = CommitCounters()
    # The watermark as the gates last reported it (their timers' times).
    self._floor = NO_FLOOR

  def process(self, keyed):
    _, markers = keyed
    staged, self._floor, tallies = split_markers(markers, self._floor)
    result = commit_staged(self._db_path, staged, self._memory_limit,
                           self._streaming, self._floor, run_id=self._run_id,
                           tallies=tallies)
    self._counters.count(result)
    for name, (staged_rows, written) in sorted(result.items()):
      yield name, staged_rows, written
    for path in export_outbox(
        self._cold_path, read_outbox(self._db_path), self._drain,
        self._cold_max_rows, self._counters):
      yield beam.pvalue.TaggedOutput(COLD_FILES, path)

  def _drain(self, commit_id, rows=0, files=0):
    """Deletes an exported commit's outbox rows and counts its files, in
    one transaction (a second export of it counts nothing again)."""
    drain_outbox(self._db_path, commit_id, self._run_id, {
        'cold_rows_written': rows, 'cold_files_written': files})


class WriteToDuckDB(beam.PTransform):
  """Writes {table name: PCollection of rows} to a DuckDB file, and what it
  stores to the cold tier.

  Takes `events` (staged rows, `tables.STAGED_EVENTS`) and `dead_letters`;
  the views are maintained by the commit (`view_sql`), and a `floors` entry,
  if given, carries the late-data gate's watermark reports (micros).
  Returns the commits' (table, staged, written) tuples (main) and the cold
  files written (`cold_files`).

  Args:
    db_path: the DuckDB file (created with the contract's tables if missing).
    cold_path: the cold tier's root, written from the commits' outbox.
    staging_dir: a local folder for staging files (default:
      `staging_dir_of(db_path)`, `<db_path>.staging`).
    max_batch_size: rows per staging file at most.
    commit_every_s: in streaming, how often the staged files are committed.
    streaming: commit on a processing-time trigger instead of at the end.
    prebatched: the inputs are PCollections of lists of rows or of Arrow
      tables with the table's schema (the fast path).
    memory_limit: DuckDB's memory_limit for the commit ('auto' or a size
      such as '1GB', see `commit_memory_limit`); None leaves DuckDB's default
      (most of the machine's memory).
    cold_max_rows: rows per cold Parquet file at most.
  """

  def __init__(self, db_path, cold_path, staging_dir=None,
               max_batch_size=50000, commit_every_s=5, streaming=False,
               prebatched=False, memory_limit=None, cold_max_rows=1000000,
               run_id=None):
    super().__init__()
    self._run_id = run_id
    self._memory_limit = memory_limit
    self._prebatched = prebatched
    self._db_path, self._cold_path = db_path, cold_path
    self._staging_dir = staging_dir or staging_dir_of(db_path)
    self._max_batch_size = max_batch_size
    self._commit_every_s = commit_every_s
    self._streaming = streaming
    self._cold_max_rows = cold_max_rows

  def expand(self, rows_by_table):
    return stage_and_commit(
        rows_by_table, lambda name: _StageFn(self._staging_dir, name),
        _CommitFn(self._db_path, self._cold_path, self._memory_limit,
                  self._streaming, self._cold_max_rows, self._run_id),
        self._max_batch_size, self._streaming, self._commit_every_s,
        self._prebatched)
