"""The BigQuery hot warehouse sink: staged rows, transactional commits,
`sink_failed` letters.

The same shape as the DuckDB sink, for a warehouse many workers share:

* Stage: each worker streams its rows (`insertAll`, with a row id derived from
  the row's key, so a retried bundle is dropped by BigQuery's insert-id dedup)
  into a staging table per target table and job, created with the target's
  *current* schema plus `_staged_at` (partitioned by day, expiring after a
  week). Rows BigQuery rejects are classified: transient reasons (`backendError`,
  `internalError`, `timeout`, `rateLimitExceeded`, and `stopped`: a valid row
  held back by an invalid one in the same request) are retried with backoff; a
  rejected `events` row becomes a `sink_failed` dead letter carrying BigQuery's
  error and the original record. A rejected dead-letter or metrics row is
  not an input record: the bundle fails loudly instead (a schema mismatch to
  fix, not data to park).
* Commit: one multi-statement transaction (`events_commit_script`) inserts the
  staged events not yet stored, their rows in the cold tier's outbox and their
  late letters, and adds them to the views (`view_sql`), so the tables stay
  exact whatever the history of runs; its first statement updates the one
  row of `commit_lock`, so two jobs' commits conflict and run one after the
  other, and a commit that lost such a race is run again (`retry_races`).
  `dead_letters` are merged by id. The commit then exports the outbox to the
  cold tier. In batch it runs once, at the end, and drops the staging tables;
  in streaming it runs every few seconds on the rows staged since the previous
  commit (less a margin: a row read twice is stored once), as staged rows
  cannot be deleted while in BigQuery's streaming buffer.

Targets are created if missing: partitioned by day (`events.event_time`,
views' `window_start`, `dead_letters.failed_at`, `pipeline_metrics.recorded_at`)
and clustered by `tenant_id` (`events` by `tenant_id, event_time`).
"""
import collections
import datetime
import hashlib
import json
import logging
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from schemas import tables
from schemas.records import DeadLetter, SINK_FAILED
from schemas.rows import dead_letter_row
from transforms import counters
from transforms.sinks.cold_sink import COLD_FILES, export_outbox
from transforms.sinks.duckdb_sink import NO_FLOOR, new_commit_id
from transforms.sinks.staging import (CommitCounters, split_markers, stage_and_commit,
                                staged_table, staged_tally)
from transforms.sinks.bigquery_tables import (STAGED_AT, bq_schema, drain_script,
                                        ensure_staging, ensure_tables,
                                        events_commit_script, letters_merge,
                                        retry_races, staging_id, tallies_script)
from transforms.enrich.stores import bigquery_client

__all__ = ['WriteToBigQueryWarehouse', 'ensure_tables', 'bq_schema',
           'SOURCE_FIELDS']

_COMMIT_KEY = 'commit'
# Fields an events row carries only for this sink: the original record and its
# origin, for the `sink_failed` letter of a rejected row. Never written.
SOURCE_FIELDS = ('_raw', '_origin')
_TRANSIENT = {'backendError', 'internalError', 'timeout', 'rateLimitExceeded',
              'stopped'}
_ROWS_PER_REQUEST = 500
_MERGE_MARGIN = datetime.timedelta(minutes=10)


def _json_value(value):
  if isinstance(value, datetime.datetime):
    return value.astimezone(datetime.timezone.utc).isoformat()
  return value


def _row_id(table, row):
  """The insert id: the row's key."""
  parts = [str(row[c]) for c in table.key]
  return hashlib.sha256('\x1f'.join([table.name] + parts).encode()).hexdigest()


class _StageFn(beam.DoFn):
  """Streams a batch of rows into the table's staging table."""

  def __init__(self, project, dataset, endpoint, name, token, max_attempts=5,
               backoff_s=0.5, mask_fields=()):
    self._project, self._dataset, self._endpoint = project, dataset, endpoint
    self._name, self._token = name, token
    self._mask_fields = mask_fields
    self._max_attempts, self._backoff_s = max_attempts, backoff_s

  def setup(self):
    self._client = bigquery_client(self._project, self._endpoint)
    retry_races(ensure_tables, self._client, self._project, self._dataset)
    names = {self._name, tables.DEAD_LETTERS.name}
    for name in names:
      retry_races(ensure_staging, self._client, self._project, self._dataset,
                  name, self._token)
    ns = counters.NAMESPACE
    self._letters = Metrics.counter(ns, counters.DEAD_LETTERS)
    self._sink_failed = Metrics.counter(
        ns, counters.dead_letter_counter(SINK_FAILED))
    self._retried = Metrics.counter(ns, 'bigquery_rows_retried')
    self._staged = Metrics.counter(ns, counters.EVENTS_STAGED)

  def teardown(self):
    client = getattr(self, '_client', None)
    if client is not None:
      client.close()

  def _insert(self, name, rows):
    """Inserts rows into `name`'s staging table; returns the rejected ones as
    (row, error text). Transient rejections are retried; they raise when they
    outlast the attempts (the runner then retries the bundle)."""
    table = staged_table(name)
    staged_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
    pending = list(rows)
    rejected = []
    for attempt in range(self._max_attempts):
      if not pending:
        break
      payload = [dict({c: _json_value(r[c]) for c in table.column_names},
                      **{STAGED_AT: staged_at}) for r in pending]
      errors = self._client.insert_rows_json(
          staging_id(self._project, self._dataset, name, self._token), payload,
          row_ids=[_row_id(table, r) for r in pending])
      retry = []
      for entry in errors:
        row = pending[entry['index']]
        reasons = {e.get('reason') for e in entry['errors']}
        if reasons <= _TRANSIENT:
          retry.append(row)
        else:
          rejected.append((row, '; '.join(
              '%s: %s' % (e.get('location') or name, e.get('message') or
                          e.get('reason')) for e in entry['errors']
              if e.get('reason') not in _TRANSIENT)))
      if retry and attempt + 1 < self._max_attempts:
        self._retried.inc(len(retry))
        time.sleep(self._backoff_s * 2 ** attempt)
      pending = retry
    if pending:
      raise IOError('bigquery: %d %s rows still rejected as transient after %d '
                    'attempts' % (len(pending), name, self._max_attempts))
    return rejected

  def process(self, rows):
    rows = list(rows)
    parked, counts = False, collections.Counter()
    for start in range(0, len(rows), _ROWS_PER_REQUEST):
      chunk = rows[start:start + _ROWS_PER_REQUEST]
      rejected = self._insert(self._name, chunk)
      if rejected and self._name != tables.EVENTS.name:
        raise IOError('bigquery rejected %d %s rows (not input records, so no '
                      'dead letters): %s' % (len(rejected), self._name,
                                             rejected[0][1]))
      if rejected:
        self._park(rejected)
        parked = True
        counts[counters.DEAD_LETTERS] += len(rejected)
        counts[counters.dead_letter_counter(SINK_FAILED)] += len(rejected)
      if self._name == tables.EVENTS.name:  # rejected rows became letters
        self._staged.inc(len(chunk) - len(rejected))
        counts[counters.EVENTS_STAGED] += len(chunk) - len(rejected)
    yield _COMMIT_KEY, (self._name, None)
    if parked:
      yield _COMMIT_KEY, (tables.DEAD_LETTERS.name, None)
    if +counts:  # this bundle's counts, as data (`tallies.py`)
      yield _COMMIT_KEY, staged_tally(dict(+counts))

  def _park(self, rejected):
    """Rejected events rows -> `sink_failed` letters in the letters' staging."""
    now = datetime.datetime.now(datetime.timezone.utc)
    letters = [dead_letter_row(DeadLetter.of(
        SINK_FAILED, 'bigquery rejected the events row: %s' % error,
        row.get('_raw', b''), row.get('_origin', ''),
        idempotency_key=row['idempotency_key'], tenant_id=row['tenant_id']), now,
        self._mask_fields) for row, error in rejected]
    failed_again = self._insert(tables.DEAD_LETTERS.name, letters)
    if failed_again:
      raise IOError('bigquery rejected sink_failed letters too: %s'
                    % failed_again[0][1])
    self._letters.inc(len(letters))
    self._sink_failed.inc(len(letters))
    logging.warning('bigquery: %d events rows rejected, kept as sink_failed '
                    'dead letters: %s', len(rejected), letters[0]['error_message'])


class _CommitFn(beam.DoFn):
  """Commits the staged rows, then exports what it stored to the cold tier
  (`cold_sink.export_outbox`); in batch, drops the staging."""

  def __init__(self, project, dataset, endpoint, token, final, cold_path,
               cold_max_rows=1000000, run_id=None):
    self._run_id = run_id
    self._project, self._dataset, self._endpoint = project, dataset, endpoint
    self._token, self._final = token, final
    self._cold_path, self._cold_max_rows = cold_path, cold_max_rows

  def setup(self):
    self._client = bigquery_client(self._project, self._endpoint)
    self._since = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    self._counters = CommitCounters()
    self._floor = self._finalized = NO_FLOOR

  def teardown(self):
    client = getattr(self, '_client', None)
    if client is not None:
      client.close()

  def _query(self, sql, **params):
    from google.cloud import bigquery
    types = {'since': 'TIMESTAMP', 'now': 'TIMESTAMP', 'floor': 'INT64',
             'commit': 'STRING', 'run': 'STRING', 'tallies': 'STRING'}
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter(name, types[name], value)
        for name, value in params.items()])
    # A commit that lost a race with another job's was rolled back whole.
    return retry_races(
        lambda: list(self._client.query(sql, job_config=config).result()))

  def _exists(self, table_id):
    from google.api_core.exceptions import NotFound
    try:
      self._client.get_table(table_id)
      return True
    except NotFound:
      return False  # committed and dropped by an earlier attempt

  def process(self, keyed):
    _, markers = keyed
    staged, self._floor, tallies = split_markers(markers, self._floor)
    names = {name for name, _ in staged}
    commit_id = new_commit_id()
    started = datetime.datetime.now(datetime.timezone.utc)
    prefix = '%s.%s' % (self._project, self._dataset)
    streaming = not self._final
    floor = max(self._floor, -2 ** 62)  # BigQuery's INT64 holds it
    result = {}
    letters = staging_id(self._project, self._dataset, 'dead_letters',
                          self._token)
    if 'dead_letters' in names and self._exists(letters):
      target = '%s.dead_letters' % prefix
      before = self._query('SELECT COUNT(*) FROM `%s`' % target)[0][0]
      staged_letters = self._query(
          'SELECT COUNT(DISTINCT dead_letter_id) FROM `%s` WHERE %s >= @since'
          % (letters, STAGED_AT), since=self._since)[0][0]
      self._query(letters_merge(target, letters), since=self._since)
      result['dead_letters'] = (staged_letters, self._query(
          'SELECT COUNT(*) FROM `%s`' % target)[0][0] - before)
      if result['dead_letters'][1]:
        tallies['letters:' + commit_id] = {
            counters.DEAD_LETTERS_WRITTEN: result['dead_letters'][1]}
    events = staging_id(self._project, self._dataset, 'events', self._token)
    if 'events' in names and self._exists(events):
      params = dict(since=self._since, commit=commit_id, now=started,
                    run=self._run_id, tallies=_tallies_json(tallies))
      if streaming:
        params['floor'] = floor
      staged_n, stored, late = self._query(
          events_commit_script(prefix, events, streaming), **params)[0]
      result['events'] = (staged_n, stored)
      result['late_letters'] = (late, late)
      self._finalized = floor
      tallies = {}  # added in the script's transaction
    elif tallies:
      self._query(tallies_script(prefix), run=self._run_id, now=started,
                  tallies=_tallies_json(tallies))
      tallies = {}
    if streaming and floor > self._finalized:
      # The watermark moved: early rows whose window it passed are final.
      for table in tables.VIEW_TABLES:
        self._query("UPDATE `%s.%s` SET pane_timing = 'ON_TIME' WHERE "
                    "pane_timing = 'EARLY' AND UNIX_MICROS(window_end) <= "
                    '@floor' % (prefix, table.name), floor=floor)
      self._finalized = floor
    if self._final:
      for name in names:
        self._client.delete_table(staging_id(
            self._project, self._dataset, name, self._token), not_found_ok=True)
    self._counters.count(result)
    for name, (staged_rows, written) in sorted(result.items()):
      yield name, staged_rows, written
    for path in export_outbox(self._cold_path, self._outbox(),
                              self._drain, self._cold_max_rows, self._counters):
      yield beam.pvalue.TaggedOutput(COLD_FILES, path)
    self._since = started - _MERGE_MARGIN

  def _outbox(self):
    prefix = '%s.%s' % (self._project, self._dataset)
    commits = [row[0] for row in self._query(
        'SELECT DISTINCT commit_id FROM `%s.cold_outbox`' % prefix)]
    schema = tables.arrow_schema(tables.EVENTS)
    result = {}
    for commit_id in commits:
      from google.cloud import bigquery
      job = self._client.query(
          'SELECT %s FROM `%s.cold_outbox` WHERE commit_id = @commit' % (
              ', '.join(tables.EVENTS.column_names), prefix),
          job_config=bigquery.QueryJobConfig(query_parameters=[
              bigquery.ScalarQueryParameter('commit', 'STRING', commit_id)]))
      table = job.result().to_arrow(create_bqstorage_client=False)
      result[commit_id] = pa.Table.from_arrays(
          [table.column(f.name).cast(f.type) for f in schema], schema=schema)
    return result

  def _drain(self, commit_id, rows=0, files=0):
    """Deletes an exported commit's outbox rows and adds the export's counts
    to the run's `pipeline_metrics`, in one transaction."""
    prefix = '%s.%s' % (self._project, self._dataset)
    counts = {name: n for name, n in (('cold_rows_written', rows),
                                      ('cold_files_written', files)) if n}
    self._query(drain_script(prefix), commit=commit_id, run=self._run_id,
                now=datetime.datetime.now(datetime.timezone.utc),
                tallies=_tallies_json({'cold:' + commit_id: counts}))


def _tallies_json(tallies) -> str:
  """{tally id: {name: n}} as the JSON the commit's SQL reads."""
  return json.dumps([{'id': tally_id, 'name': name, 'value': n}
                     for tally_id, counts in sorted(tallies.items())
                     for name, n in sorted(counts.items())])


class WriteToBigQueryWarehouse(beam.PTransform):
  """Writes {table name: PCollection of row dicts} to `project.dataset`.

  Args:
    project, dataset: the hot warehouse (`--hot_sink bigquery:PROJECT.DATASET`).
    endpoint: a BigQuery API endpoint (a local emulator), or None for Google's.
    token: names this job's staging tables (default: a new random one).
    max_batch_size: rows per staging request group at most.
    commit_every_s: in streaming, how often staged rows are merged.
    streaming: merge on a processing-time trigger instead of once at the end.
    prebatched: the inputs are PCollections of lists of rows (the fast path).
    mask_fields: fields masked in `sink_failed` letters (`--mask_fields`).
  """

  def __init__(self, project, dataset, cold_path, endpoint=None, token=None,
               max_batch_size=5000, commit_every_s=5, streaming=False,
               prebatched=False, mask_fields=(), cold_max_rows=1000000,
               run_id=None):
    super().__init__()
    self._run_id = run_id
    import uuid
    self._cold_path, self._cold_max_rows = cold_path, cold_max_rows
    self._project, self._dataset, self._endpoint = project, dataset, endpoint
    self._token = token or uuid.uuid4().hex[:12]
    self._max_batch_size = max_batch_size
    self._commit_every_s, self._streaming = commit_every_s, streaming
    self._prebatched = prebatched
    self._mask_fields = mask_fields

  def expand(self, rows_by_table):
    return stage_and_commit(
        rows_by_table,
        lambda name: _StageFn(self._project, self._dataset, self._endpoint, name,
                              self._token, mask_fields=self._mask_fields),
        _CommitFn(self._project, self._dataset, self._endpoint, self._token,
                  not self._streaming, self._cold_path, self._cold_max_rows,
                  self._run_id),
        self._max_batch_size, self._streaming, self._commit_every_s,
        self._prebatched)
