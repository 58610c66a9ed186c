"""Profile stores for the lookup path.

`DuckDBProfileStore` is the local store: the profiles file loaded (newest per
user, the same reduction as the side input) into an indexed DuckDB table, once
per worker. The production store (BigQuery) plugs in through the same three
methods.
"""
import threading

import duckdb
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.profiles import Profile, newest_profiles

__all__ = ['DuckDBProfileStore']

_SCHEMA = pa.schema([(name, pa.string()) for name in (
    'tenant_id', 'user_id', 'tier', 'region', 'updated_at')])


class DuckDBProfileStore(object):
  """Profiles in an in-memory DuckDB table with a primary-key index."""

  def __init__(self, profiles_path):
    self._path = profiles_path
    self._con = None
    self._lock = threading.Lock()

  def open(self):
    with FileSystems.open(self._path) as f:
      profiles = newest_profiles(f.read().decode('utf-8').splitlines())
    self._con = duckdb.connect(':memory:')
    self._con.execute(
        'CREATE TABLE profiles (tenant_id VARCHAR, user_id VARCHAR, tier VARCHAR, '
        'region VARCHAR, updated_at VARCHAR, PRIMARY KEY (tenant_id, user_id))')
    rows = pa.Table.from_pylist([  # noqa: F841 (read by DuckDB by name)
        {'tenant_id': t, 'user_id': u, 'tier': p.tier, 'region': p.region,
         'updated_at': p.updated_at} for (t, u), p in profiles.items()],
        schema=_SCHEMA)
    self._con.execute('INSERT INTO profiles SELECT * FROM rows')

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
