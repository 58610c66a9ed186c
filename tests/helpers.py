"""Builders shared by the tests: valid envelopes, JSON and Avro encodings,
options, decoded sample events."""
import copy
import io
import json

import fastavro
from apache_beam.options.pipeline_options import PipelineOptions

from schemas.keys import business_id, idempotency_key
from schemas.records import Event, RawRecord
from schemas.registry import default_registry
from transforms.ingest.decode import decode_and_validate
from transforms.ingest.parsing import frame_wire

_PAYLOADS = {
    'page_view': {'user_id': 'u1', 'url': '/home', 'referrer': None,
                  'duration_ms': 1200},
    'click': {'user_id': 'u1', 'element_id': 'buy', 'url': '/home'},
    'purchase': {'user_id': 'u1', 'order_id': 'o-1', 'amount': 12.5,
                 'currency': 'EUR'},
}


def envelope(event_type='page_view', **overrides):
  """A valid event dict; `payload__x=v` overrides one payload field."""
  payload = copy.deepcopy(_PAYLOADS[event_type])
  event = {
      'trace_id': 't-1',
      'schema_version': 'v1',
      'event_type': event_type,
      'source': 'web',
      'tenant_id': 'acme',
      'event_time': '2024-03-01T10:00:00Z',
      'ingested_at': '2024-03-01T10:00:05Z',
      'payload': payload,
  }
  for key, value in overrides.items():
    if key.startswith('payload__'):
      payload[key[len('payload__'):]] = value
    else:
      event[key] = value
  if 'idempotency_key' not in overrides:
    event['idempotency_key'] = idempotency_key(
        event['source'], event_type, business_id(event_type, payload),
        event['event_time'])
  return event


def as_json(event) -> bytes:
  return json.dumps(event, ensure_ascii=False).encode('utf-8')


def as_avro(event, version=None) -> bytes:
  """Confluent wire-format Avro of an envelope (payload defaults filled)."""
  registry = default_registry()
  event_type = event['event_type']
  version = version or ('v1.1' if event_type == 'page_view' else 'v1')
  schema_json = registry.wire_schema_json(event_type, version)
  payload_fields = [f for f in schema_json['fields'] if f['name'] == 'payload'][0]
  payload = {f['name']: event['payload'].get(f['name'], f.get('default'))
             for f in payload_fields['type']['fields']}
  body = io.BytesIO()
  fastavro.schemaless_writer(body, fastavro.parse_schema(schema_json),
                             dict(event, payload=payload))
  return frame_wire(registry.wire_id(event_type, version), body.getvalue())


def options(**flags):
  """PipelineOptions from keyword flags (never from sys.argv), runner pinned."""
  flags.setdefault('runner', 'FnApiRunner')
  argv = []
  for key, value in flags.items():
    if value is True:
      argv.append('--%s' % key)
    else:
      argv.append('--%s=%s' % (key, value))
  return PipelineOptions(argv)


def newest_profile_rows(path):
  """{(tenant_id, user_id): the row with the newest updated_at}, in plain Python
  (the generator writes Z timestamps, which compare as text)."""
  newest = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      key = (row['tenant_id'], row['user_id'])
      if key not in newest or row['updated_at'] > newest[key]['updated_at']:
        newest[key] = row
  return newest


def sample_events(count=60):
  """Valid events of every type, some with non-ASCII payload text."""
  result = []
  for i in range(count):
    event_type = ('page_view', 'click', 'purchase')[i % 3]
    record = envelope(event_type, tenant_id='tenant-%d' % (i % 3),
                      ingested_at='2024-03-0%dT23:59:59.99999%dZ' % (
                          1 + i % 2, i % 10),
                      event_time='2024-03-01T23:58:%02dZ' % (i % 60),
                      payload__user_id='user-%d' % i)
    if event_type == 'page_view':
      record['payload']['url'] = '/é/%d/😀' % i
    event, _ = decode_and_validate(RawRecord(as_json(record), 'f:%d' % i))
    assert isinstance(event, Event), event
    result.append(event._replace(user_tier=('gold', 'unknown')[i % 2]))
  return result
