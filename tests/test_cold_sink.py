"""The cold sink fails loudly and leaves no temporary files behind."""
import datetime
import os

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from schemas.records import RawRecord
from schemas.rows import event_row
from tests.helpers import as_json, envelope, options
from transforms.cold_sink import WriteColdParquet, cold_file_path, keys_digest
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
