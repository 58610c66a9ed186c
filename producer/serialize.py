"""An envelope to bytes: a JSON object, or Confluent wire-format Avro (magic
byte 0, the registry's 4-byte schema id, the Avro binary body)."""
import io
import json

import fastavro

from producer.envelope import ContractError
from schemas.registry import load_registry
from transforms.ingest.parsing import frame_wire

__all__ = ['serialize', 'FORMATS']

FORMATS = ('json', 'avro')


def _avro(event, registry):
  event_type, version = event['event_type'], event['schema_version']
  try:
    schema_id = registry.wire_id(event_type, version)
  except KeyError:
    raise ContractError('unsupported_schema_version',
                        'schema_version: %s %s has no registered wire schema id; '
                        'send a registered version' % (event_type, version))
  schema = registry.parsed_wire_schema(schema_id)
  payload_schema = registry.schema(event_type, version).avro
  payload = {f['name']: event['payload'].get(f['name'], f.get('default'))
             for f in payload_schema['fields']}
  body = io.BytesIO()
  fastavro.schemaless_writer(body, schema, dict(event, payload=payload))
  return frame_wire(schema_id, body.getvalue())


def serialize(event: dict, fmt: str = 'json', registry=None) -> bytes:
  """The bytes of one message or line (no newline)."""
  if fmt == 'json':
    return json.dumps(event, ensure_ascii=False,
                      separators=(',', ':')).encode('utf-8')
  if fmt == 'avro':
    return _avro(event, registry or load_registry())
  raise ValueError('format must be one of %s, got %r' % (FORMATS, fmt))
