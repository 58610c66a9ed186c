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
from transforms.cold_sink import WriteColdParquet, cold_file_path
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
  assert files == ['events/ingest_date=2024-03-01/tenant_id=%s/part-000-00000-%04d'
                   '.parquet' % (t, c) for t in 'ab' for c in range(3)]
  sizes = [pq.read_metadata(os.path.join(root, f)).num_rows for f in files]
  assert sizes == [2, 2, 1, 2, 2, 1]


def test_unwritable_cold_path_fails_the_pipeline(tmp_path):
  blocker = tmp_path / 'not-a-folder'
  blocker.write_text('a file where the cold root should be')
  with pytest.raises(Exception) as raised:
    with TestPipeline(options=options()) as p:
      _ = p | beam.Create(_rows(3)) | WriteColdParquet(str(blocker / 'cold'))
  assert 'not-a-folder' in str(raised.value)
  assert [f.name for f in tmp_path.iterdir()] == ['not-a-folder']


def test_cold_file_names_are_deterministic():
  assert cold_file_path('gs://b/cold', '2024-03-01', 'acme', 1, 0, 2) == \
      'gs://b/cold/events/ingest_date=2024-03-01/tenant_id=acme/part-001-00000-0002.parquet'
