"""Where the API's rows come from: the hot warehouse (DuckDB or BigQuery) and
the cold Parquet store. Every value reaches SQL as a bound parameter; table and
column names come from the catalog (checked to be plain identifiers), never
from a request.

DuckDB and a writer: DuckDB lets one process write a file and no other process
open it meanwhile. The pipeline's commit step holds the file only for one
transaction, and the API opens it read-only for one query at a time; each side
waits for the other's lock (`open_with_retry`), so a user sees a slower answer
during a commit, never a lock error. A wait longer than `lock_wait_s` answers
503 with Retry-After.
"""
import datetime
import os

import duckdb

from transforms.sinks.duckdb_connection import open_with_retry
from transforms.enrich.stores import bigquery_client

__all__ = ['HotDuckDB', 'HotBigQuery', 'ColdParquet', 'Unavailable', 'DERIVED']

_UTC = datetime.timezone.utc


class Unavailable(RuntimeError):
  """The store could not answer in time (503)."""


# Views computed from a table rather than stored: name -> (DuckDB, BigQuery) SQL
# of a relation with a `window_start`, `tenant_id` and `updated_at`.
DERIVED = {
    'dead_letter_counts': (
        "(SELECT date_trunc('minute', failed_at) AS window_start, tenant_id, "
        "error_kind, count(*) AS dead_letters, max(failed_at) AS updated_at "
        "FROM dead_letters GROUP BY 1, 2, 3)",
        "(SELECT TIMESTAMP_TRUNC(failed_at, MINUTE) AS window_start, tenant_id, "
        "error_kind, COUNT(*) AS dead_letters, MAX(failed_at) AS updated_at "
        "FROM `{dataset}.dead_letters` GROUP BY 1, 2, 3)"),
}


def _utc(value):
  if isinstance(value, datetime.datetime):
    value = value if value.tzinfo else value.replace(tzinfo=_UTC)
    return value.astimezone(_UTC)
  return value


class HotDuckDB(object):
  """The hot tier in a DuckDB file."""
  name = 'hot'

  def __init__(self, path, lock_wait_s=10.0):
    self.path, self.lock_wait_s = path, lock_wait_s

  def relation(self, table):
    return DERIVED[table][0] if table in DERIVED else table

  def param(self, name):
    return '$' + name

  def query(self, sql, params):
    if not os.path.exists(self.path):
      return []
    try:
      con = open_with_retry(self.path, read_only=True, wait_s=self.lock_wait_s)
    except duckdb.IOException as e:
      raise Unavailable('the hot warehouse is busy: %s' % str(e)[:80]) from None
    try:
      con.execute("SET TimeZone = 'UTC'")
      cursor = con.execute(sql, params)
      names = [d[0] for d in cursor.description]
      return [{n: _utc(v) for n, v in zip(names, row)} for row in cursor.fetchall()]
    except duckdb.CatalogException:
      return []  # a warehouse no run has written to yet
    finally:
      con.close()


class HotBigQuery(object):
  """The hot tier in a BigQuery dataset."""
  name = 'hot'

  def __init__(self, project, dataset, endpoint=None):
    self.project, self.dataset, self.endpoint = project, dataset, endpoint
    self._client = bigquery_client(project, endpoint)

  def relation(self, table):
    qualified = '%s.%s' % (self.project, self.dataset)
    if table in DERIVED:
      return DERIVED[table][1].format(dataset=qualified)
    return '`%s.%s`' % (qualified, table)

  def param(self, name):
    return '@' + name

  def query(self, sql, params):
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery
    typed = []
    for name, value in params.items():
      kind = ('TIMESTAMP' if isinstance(value, datetime.datetime) else
              'INT64' if isinstance(value, int) else 'STRING')
      typed.append(bigquery.ScalarQueryParameter(name, kind, value))
    try:
      rows = self._client.query(sql, job_config=bigquery.QueryJobConfig(
          query_parameters=typed)).result()
    except NotFound:
      return []
    return [{k: _utc(v) for k, v in row.items()} for row in rows]


class ColdParquet(object):
  """The cold tier's `events` Parquet files, read with an in-memory DuckDB."""
  name = 'cold'

  def __init__(self, root):
    self.root = root

  def _glob(self, tenant_id):
    tenant = tenant_id if tenant_id is not None else '*'
    return os.path.join(self.root, 'events', 'ingest_date=*',
                        'tenant_id=%s' % tenant, '*.parquet')

  def events(self, where, params, tenant_id, limit):
    """Rows matching `where` (on the events columns), one per key."""
    import glob
    files = sorted(glob.glob(self._glob(tenant_id)))  # never hidden temp files
    if not files:
      return []
    con = duckdb.connect()
    try:
      con.execute("SET TimeZone = 'UTC'")
      cursor = con.execute(
          'SELECT * EXCLUDE (ingest_date) FROM read_parquet($files, '
          'hive_partitioning = true, union_by_name = true) WHERE %s '
          'QUALIFY row_number() OVER (PARTITION BY idempotency_key '
          'ORDER BY processed_at) = 1 '
          'ORDER BY event_time, idempotency_key LIMIT %d' % (where, limit),
          dict(params, files=files))
      names = [d[0] for d in cursor.description]
      return [{n: _utc(v) for n, v in zip(names, row)} for row in cursor.fetchall()]
    finally:
      con.close()
