"""The cold tier: exported from the hot commits' outbox, named by content,
failing loudly and leaving no temporary files behind."""
import datetime
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import tables
from schemas.records import RawRecord
from schemas.rows import events_table
from tests.cli import query
from tests.helpers import as_json, envelope
from transforms.sinks.cold_sink import (cold_file_path, export_outbox, keys_digest,
                                  write_cold_rows)
from transforms.ingest.decode import decode_and_validate
from transforms.sinks.duckdb_sink import commit_staged, drain_outbox, read_outbox
from transforms.sinks.staging import write_staging_file

NOW = datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)


def _events(n, start=0):
  return [decode_and_validate(RawRecord(as_json(envelope(
      trace_id='t%d' % i, payload__url='/%d' % i,
      tenant_id=['a', 'b'][i % 2]))))[0] for i in range(start, start + n)]


def _cold_table(events):
  staged = events_table(events, NOW)
  schema = tables.arrow_schema(tables.EVENTS)
  return pa.Table.from_arrays([staged.column(f.name) for f in schema],
                              schema=schema)


def _tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, fs in os.walk(root) for f in fs)


def _keys(root):
  return sorted(k for f in _tree(root) for k in pq.read_table(
      os.path.join(root, f)).column('idempotency_key').to_pylist())


def test_writes_partitions_with_max_rows_per_file(tmp_path):
  root = str(tmp_path / 'cold')
  written = write_cold_rows(root, _cold_table(_events(10)), max_rows=2)
  files = _tree(root)
  assert [f.rsplit('/', 1)[0] for f in files] == [
      'events/ingest_date=2024-03-01/tenant_id=%s' % t for t in 'aaabbb']
  for f in files:  # named by the digest of the keys the file holds
    keys = pq.read_table(os.path.join(root, f)).column('idempotency_key').to_pylist()
    assert keys == sorted(keys) and f.endswith('-%s.parquet' % keys_digest(keys))
  assert sorted(rows for _, rows in written) == [1, 1, 2, 2, 2, 2]
  # Written again (a retried export): the same files, nothing more.
  write_cold_rows(root, _cold_table(_events(10)), max_rows=2)
  assert _tree(root) == files


def test_unwritable_cold_path_fails_loudly_and_leaves_nothing(tmp_path):
  blocker = tmp_path / 'not-a-folder'
  blocker.write_text('a file where the cold root should be')
  with pytest.raises(Exception) as raised:
    write_cold_rows(str(blocker / 'cold'), _cold_table(_events(3)), 10)
  assert 'not-a-folder' in str(raised.value)
  assert [f.name for f in tmp_path.iterdir()] == ['not-a-folder']


def test_cold_file_names_are_deterministic():
  digest = keys_digest(['a' * 64, 'b' * 64])
  assert digest == keys_digest(['a' * 64, 'b' * 64]) != keys_digest(['a' * 64])
  assert cold_file_path('gs://b/cold', '2024-03-01', 'acme', 1, digest) == \
      'gs://b/cold/events/ingest_date=2024-03-01/tenant_id=acme/part-001-%s.parquet' \
      % digest


def _commit(db, staging, events):
  path = write_staging_file(staging, tables.STAGED_EVENTS,
                            events_table(events, NOW))
  return commit_staged(db, [('events', path)])


def test_the_outbox_holds_what_the_hot_tier_stored_once_until_exported(
    tmp_path):
  """Two commits share three events: the cold tier gets each stored event
  once, none the hot tier refused; an export interrupted before the outbox
  was drained is done again by the next one, with the same files."""
  db, staging = str(tmp_path / 'w.duckdb'), str(tmp_path / 'staging')
  root = str(tmp_path / 'cold')
  events = _events(8)
  _commit(db, staging, events[:5])
  outbox = read_outbox(db)
  assert [t.num_rows for t in outbox.values()] == [5]
  # The export dies after its files, before the drain.
  list(export_outbox(root, outbox, lambda commit, rows, files: None, 100))
  first_files = _tree(root)
  _commit(db, staging, events[2:])  # 3 already stored, 3 new
  outbox = read_outbox(db)
  assert sorted(t.num_rows for t in outbox.values()) == [3, 5]
  list(export_outbox(root, outbox, lambda c, rows, files: drain_outbox(db, c),
                     100))
  assert read_outbox(db) == {}
  assert set(first_files) <= set(_tree(root))
  assert _keys(root) == sorted(e.idempotency_key for e in events)
  assert query(db, 'SELECT count(*) FROM events') == [(8,)]
