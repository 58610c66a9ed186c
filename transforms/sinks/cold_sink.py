"""The cold tier: stored `events` rows as Parquet, Hive-partitioned by ingest
date and tenant.

    <cold_path>/events/ingest_date=YYYY-MM-DD/tenant_id=<tenant>/part-NNN-<digest>.parquet

What goes there is exactly what the hot tier stored, once: the hot commit
puts the rows it newly stores in `events` into the `cold_outbox` table in the
same transaction, and the commit step then exports each pending commit's rows
here and deletes them from the outbox (`export_outbox`). A row the hot tier
refused (its key already stored by an earlier run, a replay, another job) is
never written; a crash between the two steps leaves the rows in the outbox,
and the next commit of any run exports them.

Files are named by the partition, their place in it and a digest of their
(sorted) keys: exporting a commit again (a retried bundle, a crash after the
files but before the outbox was drained, two jobs draining at once) writes
the same files with the same bytes. Each file is written under a temporary
name in its own partition folder and then renamed through Beam's FileSystems
(local, gs://, s3://); a failed write or rename raises (the bundle is
retried) and removes the temporary file.
"""
import datetime
import hashlib

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.sinks.files import write_atomically

__all__ = ['COLD_FILES', 'export_outbox', 'write_cold_rows', 'partition_of',
           'cold_file_path', 'keys_digest', 'write_cold_file']

# The commit step's output of the cold files it wrote.
COLD_FILES = 'cold_files'


def partition_of(row) -> tuple:
  """(ingest_date, tenant_id) of an events row; the date is UTC."""
  ingested = row['ingested_at'].astimezone(datetime.timezone.utc)
  return ingested.strftime('%Y-%m-%d'), row['tenant_id']


def keys_digest(keys) -> str:
  """16 hex digits naming a file by the (sorted) idempotency keys it holds."""
  digest = hashlib.sha256()
  for key in keys:
    digest.update(key.encode('utf-8') + b'\n')
  return digest.hexdigest()[:16]


def cold_file_path(root, ingest_date, tenant_id, part, digest):
  return FileSystems.join(
      root, 'events', 'ingest_date=%s' % ingest_date, 'tenant_id=%s' % tenant_id,
      'part-%03d-%s.parquet' % (part, digest))


def write_cold_file(path, arrow_table):
  """Writes a Parquet file under a temporary name in its folder, then renames it."""
  sink = pa.BufferOutputStream()
  pq.write_table(arrow_table, sink, compression='zstd')
  write_atomically(path, sink.getvalue().to_pybytes())


_EPOCH = datetime.date(1970, 1, 1)


def write_cold_rows(root, table: pa.Table, max_rows: int):
  """Writes `events` rows (an Arrow table with the cold schema) to their
  partitions, in files of at most `max_rows` rows sorted by key; returns
  [(path, rows)]."""
  if not table.num_rows:
    return []
  days = pc.cast(table.column('ingested_at'), pa.date32()).cast(pa.int32())
  table = table.append_column('_day', days).sort_by(
      [('_day', 'ascending'), ('tenant_id', 'ascending'),
       ('idempotency_key', 'ascending')])
  day_values = table.column('_day').to_pylist()
  tenants = table.column('tenant_id').to_pylist()
  table = table.drop_columns(['_day'])
  written, start = [], 0
  while start < len(day_values):
    stop = start
    while (stop < len(day_values) and day_values[stop] == day_values[start]
           and tenants[stop] == tenants[start]):
      stop += 1
    date = (_EPOCH + datetime.timedelta(days=day_values[start])).isoformat()
    for part, first in enumerate(range(start, stop, max_rows)):
      rows = table.slice(first, min(max_rows, stop - first))
      path = cold_file_path(root, date, tenants[start], part, keys_digest(
          rows.column('idempotency_key').to_pylist()))
      write_cold_file(path, rows)
      written.append((path, rows.num_rows))
    start = stop
  return written


def export_outbox(root, outbox, drain, max_rows, counters=None):
  """Exports each pending commit's rows (`outbox`: {commit id: Arrow
  table}) to the cold tier, then calls `drain(commit id, rows, files)`;
  yields the paths written. `counters` (a `staging.CommitCounters`) counts
  rows and files as Beam counters."""
  for commit_id in sorted(outbox):
    written = write_cold_rows(root, outbox[commit_id], max_rows)
    drain(commit_id, sum(rows for _, rows in written), len(written))
    if counters is not None:
      counters.cold_rows.inc(sum(rows for _, rows in written))
      counters.cold_files.inc(len(written))
    for path, _ in written:
      yield path
