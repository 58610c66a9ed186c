"""Profile stores for the lookup path.

`DuckDBProfileStore` is the local store: the profiles file loaded (newest per
user, the same reduction as the side input) into an indexed DuckDB table, once
per worker. `BigQueryProfileStore` is the production store
(`--profiles bigquery:PROJECT.DATASET.TABLE`). Both have the same three methods.
"""
import threading

import duckdb
import pyarrow as pa

from transforms.enrich.profiles import Profile, read_newest_profiles

__all__ = ['DuckDBProfileStore', 'BigQueryProfileStore', 'profile_store',
           'bigquery_client']

_SCHEMA = pa.schema([(name, pa.string()) for name in (
    'tenant_id', 'user_id', 'tier', 'region', 'updated_at')])


class DuckDBProfileStore(object):
  """Profiles in an in-memory DuckDB table with a primary-key index."""

  def __init__(self, profiles_path):
    self._path = profiles_path
    self._con = None
    self._lock = threading.Lock()

  def open(self):
    profiles = read_newest_profiles(self._path)
    self._con = duckdb.connect(':memory:')
    self._con.execute(
        'CREATE TABLE profiles (tenant_id VARCHAR, user_id VARCHAR, tier VARCHAR, '
        'region VARCHAR, updated_at VARCHAR, PRIMARY KEY (tenant_id, user_id))')
    self._con.register('loaded', pa.Table.from_pylist([
        {'tenant_id': t, 'user_id': u, 'tier': p.tier, 'region': p.region,
         'updated_at': p.updated_at} for (t, u), p in profiles.items()],
        schema=_SCHEMA))
    self._con.execute('INSERT INTO profiles SELECT * FROM loaded')
    self._con.unregister('loaded')

  def lookup(self, tenant_id, user_id, timeout_s):
    # In-process and local: it cannot time out; timeout_s is for remote stores.
    with self._lock:
      row = self._con.execute(
          'SELECT tier, region, updated_at FROM profiles '
          'WHERE tenant_id = ? AND user_id = ?', [tenant_id, user_id]).fetchone()
    return Profile(*row) if row else None

  def close(self):
    if self._con is not None:
      self._con.close()
      self._con = None

  def __call__(self):
    """A store is its own factory (picklable, opened on the worker)."""
    return DuckDBProfileStore(self._path)


class BigQueryProfileStore(object):
  """Profiles in a BigQuery table `(tenant_id, user_id, tier, region,
  updated_at)`: one parameterised query per cache miss, the newest `updated_at`
  winning. Transient API errors become `TransientError` (retried, then the
  breaker); anything else is a bug or a misconfiguration and fails the step.

  Args:
    table: `PROJECT.DATASET.TABLE`.
    endpoint: the API endpoint (default: Google's); e.g. a local emulator, in
      which case anonymous credentials are used.
  """

  _QUERY = ('SELECT tier, region, CAST(updated_at AS STRING) AS updated_at '
            'FROM `%s` WHERE tenant_id = @tenant_id AND user_id = @user_id '
            'ORDER BY updated_at DESC, tier DESC, region DESC LIMIT 1')

  def __init__(self, table, endpoint=None):
    self._table, self._endpoint = table, endpoint
    self._client = None

  def open(self):
    self._client = bigquery_client(self._table.split('.')[0], self._endpoint)

  def lookup(self, tenant_id, user_id, timeout_s):
    import concurrent.futures
    import requests
    from google.api_core import exceptions
    from google.cloud import bigquery
    from transforms.enrich.resilience import TransientError
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter('tenant_id', 'STRING', tenant_id),
        bigquery.ScalarQueryParameter('user_id', 'STRING', user_id)])
    try:
      rows = list(self._client.query(
          self._QUERY % self._table, job_config=config,
          timeout=timeout_s).result(timeout=timeout_s))
    except (exceptions.ServiceUnavailable, exceptions.InternalServerError,
            exceptions.TooManyRequests, exceptions.GatewayTimeout,
            exceptions.BadGateway, concurrent.futures.TimeoutError,
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout) as e:
      raise TransientError('BigQuery: %s' % e) from None
    if not rows:
      return None
    row = rows[0]
    return Profile(row['tier'], row['region'], row['updated_at'])

  def close(self):
    if self._client is not None:
      self._client.close()
      self._client = None

  def __call__(self):
    return BigQueryProfileStore(self._table, self._endpoint)


def bigquery_client(project, endpoint=None):
  """A BigQuery client; with an endpoint (a local emulator), anonymous."""
  from google.cloud import bigquery
  if endpoint:
    from google.auth.credentials import AnonymousCredentials
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={'api_endpoint': endpoint})
  return bigquery.Client(project=project)


def profile_store(profiles, bigquery_endpoint=None):
  """The store for a `--profiles` value: a file, or bigquery:PROJECT.DATASET.TABLE."""
  if profiles.startswith('bigquery:'):
    return BigQueryProfileStore(profiles[len('bigquery:'):], bigquery_endpoint)
  return DuckDBProfileStore(profiles)
