"""File sources: records are exact line bytes; Avro containers become wire records."""
import io

import fastavro

from schemas.registry import default_registry
from tests.helpers import envelope
from transforms.ingest.decode import decode_and_validate
from transforms.ingest.sources import UNREGISTERED_SCHEMA_ID, read_file_records
from schemas.records import Event


def records(data: bytes, path='f.jsonl'):
  return list(read_file_records(io.BytesIO(data), path))


def test_last_line_without_newline_is_a_record():
  assert [r.data for r in records(b'a\nb')] == [b'a', b'b']
  assert [r.data for r in records(b'a\nb\n')] == [b'a', b'b']


def test_blank_lines_and_carriage_returns_are_kept_for_decode():
  assert [r.data for r in records(b'a\r\n\n  \nb\n')] == [b'a\r', b'', b'  ', b'b']


def test_empty_file_has_no_records():
  assert records(b'') == []


def test_origins_name_file_and_line():
  origins = [r.origin for r in records(b'a\nb\n', '/x/f.jsonl')]
  assert origins == ['/x/f.jsonl:1', '/x/f.jsonl:2']


def _container(schema_json, rows):
  buffer = io.BytesIO()
  fastavro.writer(buffer, fastavro.parse_schema(schema_json), rows)
  return buffer.getvalue()


def test_avro_container_records_decode_like_json():
  registry = default_registry()
  event = envelope('click')
  data = _container(registry.wire_schema_json('click', 'v1'), [event, event])
  found = records(data, '/x/e.avro')
  assert [r.origin for r in found] == ['/x/e.avro#0', '/x/e.avro#1']
  result, _ = decode_and_validate(found[0])
  assert isinstance(result, Event)
  assert result.payload == event['payload']


def test_avro_container_with_unregistered_schema_is_malformed_per_record():
  schema = {'type': 'record', 'name': 'Other', 'fields': [
      {'name': 'x', 'type': 'long'}]}
  found = records(_container(schema, [{'x': 1}]), '/x/o.avro')
  assert found[0].data[1:5] == UNREGISTERED_SCHEMA_ID.to_bytes(4, 'big')
  result, _ = decode_and_validate(found[0])
  assert result.error_kind == 'malformed'
