"""The cold sink fails loudly and leaves no temporary files or pieces behind."""
import datetime
import os

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas import tables
from schemas.keys import key_shard
from schemas.records import RawRecord
from schemas.rows import event_row
from tests.helpers import as_json, envelope, options
from transforms import cold_sink
from transforms.batch import Batch
from transforms.cold_pieces import (STAGING_FOLDER, PieceRef, pieces_folder,
                                    read_pieces, remove_pieces, write_piece)
from transforms.cold_sink import WriteColdParquet, cold_file_path, keys_digest
from transforms.staging import rows_to_table
from transforms.decode import decode_and_validate

NOW = datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)


def _rows(n):
  return [event_row(decode_and_validate(RawRecord(as_json(envelope(
      trace_id='t%d' % i, payload__url='/%d' % i, tenant_id=['a', 'b'][i % 2]))))[0],
      NOW) for i in range(n)]


def test_writes_partitions_with_max_rows_per_file(tmp_path):
  root = str(tmp_path / 'cold')
  with TestPipeline(options=options()) as p:
    _ = p | beam.Create(_rows(10)) | WriteColdParquet(
        root, max_rows_per_file=2, shards=1)
  files = sorted(os.path.relpath(os.path.join(d, f), root)
                 for d, _, fs in os.walk(root) for f in fs)
  assert [f.rsplit('/', 1)[0] for f in files] == [
      'events/ingest_date=2024-03-01/tenant_id=%s' % t for t in 'aaabbb']
  for f in files:  # named by the digest of the keys the file holds
    keys = pq.read_table(os.path.join(root, f)).column('idempotency_key').to_pylist()
    assert f.endswith('/part-000-%s.parquet' % keys_digest(keys))
  sizes = sorted(pq.read_metadata(os.path.join(root, f)).num_rows for f in files)
  assert sizes == [1, 1, 2, 2, 2, 2]


def test_unwritable_cold_path_fails_the_pipeline(tmp_path):
  blocker = tmp_path / 'not-a-folder'
  blocker.write_text('a file where the cold root should be')
  with pytest.raises(Exception) as raised:
    with TestPipeline(options=options()) as p:
      _ = p | beam.Create(_rows(3)) | WriteColdParquet(str(blocker / 'cold'))
  assert 'not-a-folder' in str(raised.value)
  assert [f.name for f in tmp_path.iterdir()] == ['not-a-folder']


def test_cold_file_names_are_deterministic():
  digest = keys_digest(['a' * 64, 'b' * 64])
  assert digest == keys_digest(['a' * 64, 'b' * 64]) != keys_digest(['a' * 64])
  assert cold_file_path('gs://b/cold', '2024-03-01', 'acme', 1, digest) == \
      'gs://b/cold/events/ingest_date=2024-03-01/tenant_id=acme/part-001-%s.parquet' \
      % digest


def test_a_later_run_never_overwrites_an_earlier_runs_files(tmp_path):
  """Two runs into the same partitions with different events: both kept."""
  root = str(tmp_path / 'cold')
  rows = _rows(6)
  for part in (rows[:3], rows[3:]):
    with TestPipeline(options=options()) as p:
      _ = p | beam.Create(part) | WriteColdParquet(root, shards=1)
  keys = [k for d, _, fs in os.walk(root) for f in fs
          for k in pq.read_table(os.path.join(d, f)).column(
              'idempotency_key').to_pylist()]
  assert sorted(keys) == sorted(r['idempotency_key'] for r in rows)


def _tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, fs in os.walk(root) for f in fs)


def test_batched_input_groups_piece_references_and_removes_the_pieces(tmp_path):
  """Batches (the fast path) give the same files as one row per element; the
  grouping carries references to piece files, which are gone after the run."""
  rows = _rows(9)
  per_row, batched = str(tmp_path / 'per_row'), str(tmp_path / 'batched')
  with TestPipeline(options=options()) as p:
    _ = p | beam.Create(rows) | WriteColdParquet(per_row, max_rows_per_file=2)
  with TestPipeline(options=options()) as p:
    written = p | beam.Create([
        rows_to_table(tables.EVENTS, rows[:4]), rows[4:]]) | WriteColdParquet(
            batched, max_rows_per_file=2, prebatched=True)
    assert_that(written | beam.combiners.Count.Globally(), equal_to([6]))
  assert _tree(batched) == _tree(per_row)
  for f in _tree(batched):
    assert pq.read_table(os.path.join(batched, f)).equals(
        pq.read_table(os.path.join(per_row, f)))
  assert not os.path.exists(os.path.join(batched, STAGING_FOLDER))
  # What the grouping holds: (partition, reference) pairs, one per partition.
  grouped = list(cold_sink._StagePiecesFn(str(tmp_path / 'look'), 2).process(rows))
  assert {key for key, _ in grouped} == {
      cold_sink.partition_of(r) + (key_shard(r['idempotency_key'], 2),)
      for r in rows}
  assert all(isinstance(ref, PieceRef) for _, ref in grouped)


def test_a_piece_holds_each_group_as_its_own_range(tmp_path):
  table = rows_to_table(tables.EVENTS, _rows(6))
  groups = [('a', table.slice(0, 1)), ('b', table.slice(1, 3)),
            ('c', table.slice(4, 2))]
  refs = write_piece(str(tmp_path), groups)
  assert [k for k, _ in refs] == ['a', 'b', 'c']
  assert len({ref.path for _, ref in refs}) == 1
  schema = tables.arrow_schema(tables.EVENTS)
  for (_, expected), (_, ref) in zip(groups, refs):
    assert read_pieces([ref], schema).equals(expected)
  both = read_pieces([refs[2][1], refs[0][1]], schema)
  assert sorted(both.column('trace_id').to_pylist()) == sorted(
      table.take([0, 4, 5]).column('trace_id').to_pylist())
  # The same rows again (a retried bundle): the same file, not a new one.
  assert write_piece(str(tmp_path), groups) == refs
  assert len(os.listdir(tmp_path)) == 1


def test_removing_a_runs_pieces_takes_orphans_and_can_run_twice(tmp_path):
  root = str(tmp_path / 'cold')
  folder = pieces_folder(root, 'run-1')
  table = rows_to_table(tables.EVENTS, _rows(2))
  write_piece(folder, [('k', table)])
  write_piece(folder, [('k', table.slice(1))])  # a failed bundle's orphan
  other = pieces_folder(root, 'run-2')  # another run going on: left alone
  write_piece(other, [('k', table)])
  assert remove_pieces(folder) == 2
  assert remove_pieces(folder) == 0
  assert _tree(root) == [os.path.relpath(p, root) for p in
                         [os.path.join(other, f) for f in os.listdir(other)]]
  assert remove_pieces(other) == 1
  assert not os.path.exists(root + '/' + STAGING_FOLDER)


def test_streaming_batches_are_grouped_by_partition_without_pieces(tmp_path):
  """Micro-batches in streaming (Arrow tables and row dicts, in two panes):
  every row in its partition once, the same files as the bounded run's
  when one pane holds them all, and no piece file."""
  from apache_beam.options.pipeline_options import StandardOptions
  from apache_beam.testing.test_stream import TestStream
  rows = _rows(9)
  streamed, bounded = str(tmp_path / 'streamed'), str(tmp_path / 'bounded')
  opts = options(runner='BundleBasedDirectRunner')
  opts.view_as(StandardOptions).streaming = True
  stream = (TestStream()
            .add_elements([rows_to_table(tables.EVENTS, rows[:4])])
            .advance_processing_time(20)
            .add_elements([Batch(rows[4:])])
            .advance_watermark_to_infinity())
  with TestPipeline(options=opts) as p:
    _ = p | stream | WriteColdParquet(streamed, streaming=True, flush_s=10,
                                      prebatched=True)
  assert not os.path.exists(os.path.join(streamed, STAGING_FOLDER))
  files = _tree(streamed)
  keys = [k for f in files for k in pq.read_table(os.path.join(
      streamed, f)).column('idempotency_key').to_pylist()]
  assert sorted(keys) == sorted(r['idempotency_key'] for r in rows)
  for f in files:
    table = pq.read_table(os.path.join(streamed, f))
    assert f.rsplit('/', 1)[0] == 'events/ingest_date=2024-03-01/tenant_id=%s' % (
        table.column('tenant_id')[0])
  with TestPipeline(options=options()) as p:
    _ = p | beam.Create([Batch(rows)]) | WriteColdParquet(bounded,
                                                          prebatched=True)
  with TestPipeline(options=opts) as p:
    _ = p | TestStream().add_elements([Batch(rows)]).advance_watermark_to_infinity() \
        | WriteColdParquet(str(tmp_path / 'one_pane'), streaming=True,
                           prebatched=True)
  assert _tree(str(tmp_path / 'one_pane')) == _tree(bounded)
