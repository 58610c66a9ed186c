"""The BigQuery hot warehouse sink: staged rows, MERGE commits, `sink_failed` letters.

The same shape as the DuckDB sink, for a warehouse many workers share:

* Stage: each worker streams its rows (`insertAll`, with a row id derived from
  the row's key, so a retried bundle is dropped by BigQuery's insert-id dedup)
  into a staging table per target table and job, created with the target's
  *current* schema plus `_staged_at` (partitioned by day, expiring after a
  week). Rows BigQuery rejects are classified: transient reasons (`backendError`,
  `internalError`, `timeout`, `rateLimitExceeded`, and `stopped`: a valid row
  held back by an invalid one in the same request) are retried with backoff; a
  rejected `events` row becomes a `sink_failed` dead letter carrying BigQuery's
  error and the original record. A rejected view, dead-letter or metrics row is
  not an input record: the bundle fails loudly instead (a schema mismatch to
  fix, not data to park).
* Commit: one step MERGEs what was staged into the targets: `events` insert if
  the key is absent (a rerun adds nothing), `dead_letters` by id, views upsert
  only by a pane with a higher count (a late pane replaces the row, an older
  retried one never does). In batch it runs once, at the end, and drops the
  staging tables; in streaming it runs every few seconds on the rows staged
  since the previous commit (less a margin; MERGE is idempotent), as staged rows
  cannot be deleted while in BigQuery's streaming buffer.

Targets are created if missing: partitioned by day (`events.event_time`,
views' `window_start`, `dead_letters.failed_at`, `pipeline_metrics.recorded_at`)
and clustered by `tenant_id`.
"""
import datetime
import hashlib
import logging
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas import tables
from schemas.records import DeadLetter, SINK_FAILED
from schemas.rows import dead_letter_row
from transforms import counters
from transforms.staging import stage_and_commit, view_pane_order, view_pane_wins
from transforms.stores import bigquery_client

__all__ = ['WriteToBigQueryWarehouse', 'ensure_tables', 'bq_schema',
           'write_metrics', 'depth', 'SOURCE_FIELDS']

_COMMIT_KEY = 'commit'
STAGED_AT = '_staged_at'
# Fields an events row carries only for this sink: the original record and its
# origin, for the `sink_failed` letter of a rejected row. Never written.
SOURCE_FIELDS = ('_raw', '_origin')
_PARTITION = {'events': 'event_time', 'dead_letters': 'failed_at',
              'pipeline_metrics': 'recorded_at'}
_TRANSIENT = {'backendError', 'internalError', 'timeout', 'rateLimitExceeded',
              'stopped'}
_ROWS_PER_REQUEST = 500
_MERGE_MARGIN = datetime.timedelta(minutes=10)


def bq_schema(table, staging=False):
  from google.cloud import bigquery
  fields = [bigquery.SchemaField(
      c.name, 'STRING' if c.type == 'JSON' else c.type,
      mode='NULLABLE' if c.nullable else 'REQUIRED') for c in table.columns]
  if staging:
    fields.append(bigquery.SchemaField(STAGED_AT, 'TIMESTAMP', mode='REQUIRED'))
  return fields


def _partition_field(table):
  return _PARTITION.get(table.name, 'window_start')


def ensure_tables(client, project, dataset):
  """Creates the dataset and the contract's tables where missing (never alters
  an existing one: an operator's table is used as it is)."""
  from google.cloud import bigquery
  client.create_dataset('%s.%s' % (project, dataset), exists_ok=True)
  for table in tables.TABLES.values():
    target = bigquery.Table('%s.%s.%s' % (project, dataset, table.name),
                            schema=bq_schema(table))
    target.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=_partition_field(table))
    if 'tenant_id' in table.column_names:
      target.clustering_fields = ['tenant_id']
    client.create_table(target, exists_ok=True)


def _staging_id(project, dataset, name, token):
  return '%s.%s._staging_%s_%s' % (project, dataset, name, token)


def _ensure_staging(client, project, dataset, name, token):
  """A staging table with the target's current schema plus `_staged_at`."""
  from google.cloud import bigquery
  target = client.get_table('%s.%s.%s' % (project, dataset, name))
  staging = bigquery.Table(
      _staging_id(project, dataset, name, token),
      schema=list(target.schema) + [bigquery.SchemaField(
          STAGED_AT, 'TIMESTAMP', mode='REQUIRED')])
  staging.time_partitioning = bigquery.TimePartitioning(
      type_=bigquery.TimePartitioningType.DAY, field=STAGED_AT)
  staging.expires = (datetime.datetime.now(datetime.timezone.utc)
                     + datetime.timedelta(days=7))
  client.create_table(staging, exists_ok=True)


def _json_value(value):
  if isinstance(value, datetime.datetime):
    return value.astimezone(datetime.timezone.utc).isoformat()
  return value


def _row_id(table, row):
  """The insert id: the row's key, and for views its value (a later pane with
  a higher count is a different row)."""
  parts = [str(row[c]) for c in table.key]
  if table in tables.VIEW_TABLES:
    parts.append(str(row.get('event_count', row.get('active_users'))))
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
    ensure_tables(self._client, self._project, self._dataset)
    names = {self._name, tables.DEAD_LETTERS.name}
    for name in names:
      _ensure_staging(self._client, self._project, self._dataset, name,
                      self._token)
    ns = counters.NAMESPACE
    self._letters = Metrics.counter(ns, counters.DEAD_LETTERS)
    self._sink_failed = Metrics.counter(
        ns, counters.dead_letter_counter(SINK_FAILED))
    self._retried = Metrics.counter(ns, 'bigquery_rows_retried')

  def teardown(self):
    client = getattr(self, '_client', None)
    if client is not None:
      client.close()

  def _insert(self, name, rows):
    """Inserts rows into `name`'s staging table; returns the rejected ones as
    (row, error text). Transient rejections are retried; they raise when they
    outlast the attempts (the runner then retries the bundle)."""
    table = tables.TABLES[name]
    staged_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
    pending = list(rows)
    rejected = []
    for attempt in range(self._max_attempts):
      if not pending:
        break
      payload = [dict({c: _json_value(r[c]) for c in table.column_names},
                      **{STAGED_AT: staged_at}) for r in pending]
      errors = self._client.insert_rows_json(
          _staging_id(self._project, self._dataset, name, self._token), payload,
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
    parked = False
    for start in range(0, len(rows), _ROWS_PER_REQUEST):
      rejected = self._insert(self._name, rows[start:start + _ROWS_PER_REQUEST])
      if rejected and self._name != tables.EVENTS.name:
        raise IOError('bigquery rejected %d %s rows (not input records, so no '
                      'dead letters): %s' % (len(rejected), self._name,
                                             rejected[0][1]))
      if rejected:
        self._park(rejected)
        parked = True
    yield _COMMIT_KEY, self._name
    if parked:
      yield _COMMIT_KEY, tables.DEAD_LETTERS.name

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


def merge_sql(table, target, staging):
  """The MERGE of staged rows (since @since) into `target`."""
  cols = table.column_names
  keys = table.key
  on = ' AND '.join('T.%s = S.%s' % (k, k) for k in keys)
  insert = 'INSERT (%s) VALUES (%s)' % (', '.join(cols),
                                        ', '.join('S.' + c for c in cols))
  if table.name == tables.EVENTS.name:
    order, matched = 'processed_at, trace_id', ''
  elif table.name == tables.DEAD_LETTERS.name:
    order, matched = 'failed_at', ''
  else:
    order = view_pane_order(table)
    matched = 'WHEN MATCHED AND %s THEN UPDATE SET %s ' % (
        view_pane_wins(table, 'S', 'T'),
        ', '.join('%s = S.%s' % (c, c) for c in cols if c not in keys))
  return ('MERGE `%s` T USING (SELECT %s FROM `%s` WHERE %s >= @since '
          'QUALIFY ROW_NUMBER() OVER (PARTITION BY %s ORDER BY %s) = 1) S '
          'ON %s %sWHEN NOT MATCHED THEN %s' % (
              target, ', '.join(cols), staging, STAGED_AT, ', '.join(keys),
              order, on, matched, insert))


class _CommitFn(beam.DoFn):
  """MERGEs the staged rows into the targets; in batch, drops the staging."""

  def __init__(self, project, dataset, endpoint, token, final):
    self._project, self._dataset, self._endpoint = project, dataset, endpoint
    self._token, self._final = token, final

  def setup(self):
    self._client = bigquery_client(self._project, self._endpoint)
    self._since = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    ns = counters.NAMESPACE
    self._events_written = Metrics.counter(ns, counters.EVENTS_WRITTEN)
    self._events_already = Metrics.counter(ns, counters.EVENTS_ALREADY_STORED)
    self._letters_written = Metrics.counter(ns, counters.DEAD_LETTERS_WRITTEN)

  def teardown(self):
    client = getattr(self, '_client', None)
    if client is not None:
      client.close()

  def _scalar(self, sql, since=None):
    from google.cloud import bigquery
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter('since', 'TIMESTAMP', since)] if since else [])
    return list(self._client.query(sql, job_config=config).result())[0][0]

  def process(self, keyed):
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery
    _, names = keyed
    started = datetime.datetime.now(datetime.timezone.utc)
    since = self._since
    for name in sorted(set(names)):
      table = tables.TABLES[name]
      target = '%s.%s.%s' % (self._project, self._dataset, name)
      staging = _staging_id(self._project, self._dataset, name, self._token)
      try:
        staged = self._scalar(
            'SELECT COUNT(DISTINCT %s) FROM `%s` WHERE %s >= @since' % (
                table.key[0] if len(table.key) == 1 else
                "CONCAT(%s)" % ", '|', ".join('CAST(%s AS STRING)' % k
                                               for k in table.key),
                staging, STAGED_AT), since)
      except NotFound:
        continue  # committed and dropped by an earlier attempt
      before = self._scalar('SELECT COUNT(*) FROM `%s`' % target)
      self._client.query(merge_sql(table, target, staging), job_config=(
          bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter(
              'since', 'TIMESTAMP', since)]))).result()
      written = self._scalar('SELECT COUNT(*) FROM `%s`' % target) - before
      if name == tables.EVENTS.name:
        self._events_written.inc(written)
        self._events_already.inc(staged - written)
      elif name == tables.DEAD_LETTERS.name:
        self._letters_written.inc(written)
      if self._final:
        self._client.delete_table(staging, not_found_ok=True)
      yield name, staged, written
    self._since = started - _MERGE_MARGIN


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

  def __init__(self, project, dataset, endpoint=None, token=None,
               max_batch_size=5000, commit_every_s=5, streaming=False,
               prebatched=False, mask_fields=()):
    super().__init__()
    import uuid
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
                  final=not self._streaming),
        self._max_batch_size, self._streaming, self._commit_every_s,
        self._prebatched)


def write_metrics(project, dataset, endpoint, run_id, counts, recorded_at):
  """The run's counters into `pipeline_metrics` (insert ids: run and name)."""
  client = bigquery_client(project, endpoint)
  try:
    ensure_tables(client, project, dataset)
    rows = [{'run_id': run_id, 'name': name, 'value': int(value),
             'recorded_at': recorded_at.isoformat()}
            for name, value in sorted(counts.items())]
    errors = client.insert_rows_json(
        '%s.%s.pipeline_metrics' % (project, dataset), rows,
        row_ids=['%s/%s' % (r['run_id'], r['name']) for r in rows])
    if errors:
      raise IOError('bigquery rejected pipeline_metrics rows: %s' % errors[:3])
  finally:
    client.close()


def depth(project, dataset, endpoint):
  """Dead letters not yet replayed, per kind."""
  client = bigquery_client(project, endpoint)
  try:
    rows = client.query(
        'SELECT error_kind, COUNT(*) FROM `%s.%s.dead_letters` WHERE replayed_at '
        'IS NULL GROUP BY error_kind' % (project, dataset)).result()
    return {row[0]: row[1] for row in rows}
  finally:
    client.close()
