"""The contract's shapes stay in step: Avro schemas, records, tables, Arrow."""
import pyarrow as pa

from schemas import tables
from schemas.keys import idempotency_key
from schemas.records import ERROR_KINDS, ERROR_STAGES, Event
from schemas.registry import default_registry
from schemas.rows import dead_letter_row, event_row
from tests.helpers import as_json, envelope
from transforms.ingest.decode import decode_and_validate
from schemas.records import RawRecord


def test_event_fields_are_events_columns():
  columns = set(tables.EVENTS.column_names)
  fields = set(Event._fields) - {'raw', 'origin', 'late_letter'}
  assert fields <= columns
  assert columns - fields == {'processed_at'}
  # Staged, an event also carries its late letter (written with it).
  assert set(tables.STAGED_EVENTS.column_names) - columns == {'late_letter'}


def test_arrow_schema_matches_table_columns():
  for table in tables.TABLES.values():
    schema = tables.arrow_schema(table)
    assert schema.names == table.column_names
    for column in table.columns:
      assert schema.field(column.name).nullable == column.nullable
      if column.type == 'TIMESTAMP':
        assert schema.field(column.name).type == pa.timestamp('us', tz='UTC')


def test_rows_fit_their_arrow_schemas():
  event, _ = decode_and_validate(RawRecord(as_json(envelope()), 'f:1'))
  row = event_row(event, event.ingested_at)
  assert list(row) == tables.STAGED_EVENTS.column_names
  pa.Table.from_pylist([row], schema=tables.arrow_schema(tables.STAGED_EVENTS))
  letter, _ = decode_and_validate(RawRecord(b'\xff', 'f:2'))
  row = dead_letter_row(letter, event.ingested_at)
  assert list(row) == tables.DEAD_LETTERS.column_names
  assert row['raw_encoding'] == 'base64' and row['raw'] == '/w=='
  pa.Table.from_pylist([row], schema=tables.arrow_schema(tables.DEAD_LETTERS))


def test_contract_tables_and_keys():
  assert tables.EVENTS.key == ('idempotency_key',)
  assert tables.TABLES['user_activity_hourly'].key == (
      'window_start', 'tenant_id', 'user_id')
  assert tables.TABLES['event_counts_1m'].key == (
      'window_start', 'tenant_id', 'event_type')
  assert tables.TABLES['active_users_15m'].key == ('window_start', 'tenant_id')
  assert {'run_id', 'name', 'value', 'recorded_at'} == set(
      tables.PIPELINE_METRICS.column_names)


def test_error_kinds_in_contract_order_with_stages():
  assert ERROR_KINDS == (
      'oversized', 'malformed', 'unsupported_schema_version',
      'unknown_event_type', 'schema_violation', 'late_event',
      'enrichment_failed', 'sink_failed')
  assert ERROR_STAGES['late_event'] == 'window'
  assert ERROR_STAGES['sink_failed'] == 'sink'


def test_registry_gate_and_reader():
  registry = default_registry()
  assert registry.event_types == ['click', 'page_view', 'purchase']
  assert registry.majors() == {1, 2}
  assert registry.majors('purchase') == {1, 2} and registry.majors('click') == {1}
  assert registry.reader('purchase', 'v2.4').version == 'v2'
  assert registry.reader('page_view', 'v1').version == 'v1.1'
  assert registry.reader('page_view', 'v01.0').version == 'v1.1'
  assert registry.reader('click', 'v1.3').version == 'v1'
  assert registry.reader('click', 'v2') is None
  assert registry.reader('signup', 'v1') is None


def test_wire_ids_round_trip_to_writer_schemas():
  registry = default_registry()
  for event_type in registry.event_types:
    for version in registry.versions(event_type):
      schema_id = registry.wire_id(event_type, version)
      assert registry.wire_id_for_schema(
          registry.parsed_wire_schema(schema_id)) == schema_id


def test_idempotency_key_is_the_contract_formula():
  import hashlib
  expected = hashlib.sha256(
      b'web:purchase:o-1:2024-03-01T10:00:00Z').hexdigest()
  assert idempotency_key('web', 'purchase', 'o-1', '2024-03-01T10:00:00Z') == expected
  assert envelope('purchase')['idempotency_key'] == expected
  assert envelope('click')['idempotency_key'] == hashlib.sha256(
      b'web:click:u1:/home:2024-03-01T10:00:00Z').hexdigest()


def test_duckdb_ddl_has_primary_keys():
  ddl = tables.duckdb_ddl(tables.EVENTS)
  assert 'PRIMARY KEY (idempotency_key)' in ddl
  assert 'event_time TIMESTAMP NOT NULL' in ddl
