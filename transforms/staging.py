"""Stage rows as Parquet files with content-derived names (temp name, then rename).

Why stage: DuckDB allows one writer process per file, but Beam may run several
worker processes. Workers therefore only write staging files; one commit step
loads them in a single transaction (see `duckdb_sink`). A file's name is the hash
of its rows, so a retried bundle writes the same file again instead of a new one.
"""
import hashlib
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import Table, arrow_schema

__all__ = ['write_staging_file', 'rows_to_table']


def rows_to_table(table: Table, rows) -> pa.Table:
  """Row dicts to an Arrow table with the table's schema (fails on a bad row)."""
  return pa.Table.from_pylist(list(rows), schema=arrow_schema(table))


def write_staging_file(directory: str, table: Table, rows) -> str:
  """Writes rows to `<directory>/<table>/<sha256>.parquet`; returns the path."""
  arrow = rows_to_table(table, rows)
  sink = pa.BufferOutputStream()
  pq.write_table(arrow, sink, compression='zstd')
  data = sink.getvalue().to_pybytes()
  folder = os.path.join(directory, table.name)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, hashlib.sha256(data).hexdigest() + '.parquet')
  if not os.path.exists(path):
    temp = '%s.%s.tmp' % (path, uuid.uuid4().hex)
    with open(temp, 'wb') as f:
      f.write(data)
    os.replace(temp, path)
  return path
