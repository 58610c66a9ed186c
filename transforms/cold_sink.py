"""The cold tier: `events` rows as Parquet, Hive-partitioned by ingest date and tenant.

    <cold_path>/events/ingest_date=YYYY-MM-DD/tenant_id=<tenant>/part-SSS-<digest>.parquet

Rows are grouped by (ingest_date, tenant_id, shard), sorted by idempotency_key
and cut into files of at most `max_rows_per_file`; the name is the shard and a
digest of the file's keys, so a retried bundle or a rerun of the same input
writes the same files again instead of new ones, while a later run (other
input, a replay, a restarted stream) gets new names and never overwrites what
an earlier one wrote. In streaming the global window fires on a processing-time
trigger (never an event-time window, so no late event is ever dropped here).
On the batched path (bounded input) each batch is first written as a piece file
under `<cold_path>/.staging/` and the grouping carries references to it, so the
runner does not hold the rows until the writer runs (`cold_pieces`); streaming
micro-batches group their rows by partition directly.

Each file is written under a temporary name in its own partition folder and then
renamed through Beam's FileSystems (local, gs://, s3://). Unlike
`fileio.WriteToFiles`, a failed write or rename raises, so the bundle fails and is
retried, and the temporary file is removed: nothing is left behind in a hidden
folder while the run "succeeds".
"""
import datetime
import hashlib
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from schemas import tables
from schemas.keys import key_shard
from transforms import counters
from transforms.batched_tables import split_table
from transforms.cold_pieces import (PieceRef, pieces_folder, read_pieces,
                                    remove_pieces, write_piece)
from transforms.files import write_atomically
from transforms.staging import rows_to_table, streaming_flush

__all__ = ['WriteColdParquet', 'partition_of', 'cold_file_path', 'keys_digest',
           'write_cold_file']


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


def cold_file_path(root, ingest_date, tenant_id, shard, digest):
  return FileSystems.join(
      root, 'events', 'ingest_date=%s' % ingest_date, 'tenant_id=%s' % tenant_id,
      'part-%03d-%s.parquet' % (shard, digest))


def write_cold_file(path, arrow_table):
  """Writes a Parquet file under a temporary name in its folder, then renames it."""
  sink = pa.BufferOutputStream()
  pq.write_table(arrow_table, sink, compression='zstd')
  write_atomically(path, sink.getvalue().to_pybytes())


_EPOCH = datetime.date(1970, 1, 1)


def _partition_keys(table: pa.Table, shards: int):
  """(ingest_date, tenant_id, shard) of each row of an `events` table (the
  date from the UTC timestamp as days, formatted once per distinct day:
  Arrow's strftime per row was a third of the cold tier's staging time)."""
  days = pc.cast(table.column('ingested_at'), pa.date32()).cast(pa.int32())
  names = {}
  keys = []
  for day, tenant, key in zip(days.to_pylist(),
                              table.column('tenant_id').to_pylist(),
                              table.column('idempotency_key').to_pylist()):
    date = names.get(day)
    if date is None:
      date = names[day] = (_EPOCH + datetime.timedelta(days=day)).isoformat()
    keys.append((date, tenant, key_shard(key, shards)))
  return keys


class _StagePiecesFn(beam.DoFn):
  """A batch of rows (an Arrow `events` table, or row dicts) to one piece file
  and (partition key, PieceRef) pairs, one per partition in the batch."""

  def __init__(self, folder, shards):
    self._folder, self._shards = folder, shards

  def process(self, rows):
    rows = rows_to_table(tables.EVENTS, rows)
    if not rows.num_rows:
      return
    yield from write_piece(self._folder, split_table(
        rows, _partition_keys(rows, self._shards)))


class _SplitPartitionsFn(beam.DoFn):
  """Streaming, batches of rows (an Arrow `events` table, or row dicts):
  (partition key, the rows of the batch in it) pairs. No piece files: a
  stream's pane is small, and a piece could only go once the stream ends."""

  def __init__(self, shards):
    self._shards = shards

  def process(self, rows):
    rows = rows_to_table(tables.EVENTS, rows)
    if rows.num_rows:
      yield from split_table(rows, _partition_keys(rows, self._shards))


def _as_table(parts) -> pa.Table:
  """The grouped values (piece references, Arrow tables, or tuples of rows)
  as one table sorted by key."""
  parts = list(parts)
  schema = tables.arrow_schema(tables.EVENTS)
  refs = [p for p in parts if isinstance(p, PieceRef)]
  arrow = [read_pieces(refs, schema)] if refs else []
  arrow += [p for p in parts if isinstance(p, pa.Table)]
  rows = [r for p in parts if not isinstance(p, (PieceRef, pa.Table))
          for r in p]
  if rows:
    arrow.append(rows_to_table(tables.EVENTS, rows))
  table = pa.concat_tables(arrow) if arrow else schema.empty_table()
  return table.sort_by('idempotency_key')


class _WritePartitionFn(beam.DoFn):

  def __init__(self, root, max_rows):
    self._root, self._max_rows = root, max_rows

  def setup(self):
    self._rows = Metrics.counter(counters.NAMESPACE, 'cold_rows_written')
    self._files = Metrics.counter(counters.NAMESPACE, 'cold_files_written')

  def process(self, grouped):
    (ingest_date, tenant_id, shard), parts = grouped
    table = _as_table(parts)
    for start in range(0, table.num_rows, self._max_rows):
      part = table.slice(start, self._max_rows)
      path = cold_file_path(self._root, ingest_date, tenant_id, shard,
                            keys_digest(part.column('idempotency_key').to_pylist()))
      write_cold_file(path, part)
      self._rows.inc(part.num_rows)
      self._files.inc()
      yield path


class WriteColdParquet(beam.PTransform):
  """Events rows in; the paths of the Parquet files written out.

  Args:
    root: the cold store's root (folder, gs:// or s3://).
    max_rows_per_file: rows per file at most.
    shards: files written in parallel per partition and pane.
    streaming: flush on a processing-time trigger every `flush_s` seconds.
    prebatched: the input is a PCollection of lists of rows or of Arrow
      `events` tables (the fast paths). On bounded input each batch is
      staged as a piece file (`cold_pieces`) and only references are
      grouped; in streaming the batch's rows are grouped by partition.
  """

  def __init__(self, root, max_rows_per_file=1000000, shards=2,
               streaming=False, flush_s=10, prebatched=False):
    super().__init__()
    self._prebatched = prebatched
    if max_rows_per_file < 1 or shards < 1:
      raise ValueError('max_rows_per_file and shards must be >= 1')
    # This run's piece files (prebatched input): fixed when the graph is
    # built, so a retried bundle writes into the same folder.
    self._pieces = pieces_folder(root, uuid.uuid4().hex)
    self._root, self._max_rows, self._shards = root, max_rows_per_file, shards
    self._streaming, self._flush_s = streaming, flush_s

  def expand(self, rows):
    shards = self._shards

    def key(row):
      return partition_of(row) + (key_shard(row['idempotency_key'], shards),)
    if self._prebatched and self._streaming:
      keyed = rows | 'SplitPartitions' >> beam.ParDo(_SplitPartitionsFn(shards))
    elif self._prebatched:
      keyed = rows | 'StagePieces' >> beam.ParDo(
          _StagePiecesFn(self._pieces, shards))
    else:
      keyed = rows | 'KeyByPartition' >> beam.Map(lambda r: (key(r), (r,)))
    if self._streaming:
      keyed = keyed | 'FlushEvery' >> streaming_flush(self._flush_s)
    else:
      keyed = keyed | 'GlobalWindow' >> beam.WindowInto(window.GlobalWindows())
    written = (keyed
               | 'GroupPartitions' >> beam.GroupByKey()
               | 'WriteParquet' >> beam.ParDo(
                   _WritePartitionFn(self._root, self._max_rows)))
    if self._prebatched and not self._streaming:
      # Once every partition file is written (a global count waits for all
      # of them), the run's pieces go.
      _ = (written
           | 'AllWritten' >> beam.combiners.Count.Globally()
           | 'RemovePieces' >> beam.Map(
               lambda _, folder: remove_pieces(folder), self._pieces))
    return written
