"""The producer library: deterministic keys, refusal before sending, the wire
formats, the emitters' keys and settings, and retries dropped by the pipeline."""
import datetime
import io
import json

import confluent_kafka
import pytest

from producer import (ContractError, FileEmitter, KafkaEmitter, Producer,
                      build_event, serialize)
from producer.__main__ import main as producer_main
from producer.emitters import KAFKA_IDEMPOTENT_SETTINGS
from schemas.keys import idempotency_key
from schemas.records import Event, RawRecord
from tests.cli import metrics, query, run_module
from transforms.ingest.decode import decode_and_validate

FACT = dict(tenant_id='acme', source='shop', event_time='2024-03-01T10:00:00Z')
PURCHASE = {'user_id': 'u1', 'order_id': 'o-1', 'amount_minor': 1250,
            'currency': 'EUR'}


def test_same_fact_gives_the_same_key_and_a_new_trace_id():
  first = build_event('purchase', dict(PURCHASE), **FACT)
  again = build_event('purchase', dict(PURCHASE), **FACT)
  assert first['idempotency_key'] == again['idempotency_key'] == idempotency_key(
      'shop', 'purchase', 'o-1', '2024-03-01T10:00:00Z')
  assert first['trace_id'] != again['trace_id']
  assert first['schema_version'] == 'v2'  # the newest registered by default
  other = build_event('purchase', dict(PURCHASE, order_id='o-2'), **FACT)
  assert other['idempotency_key'] != first['idempotency_key']


def test_key_uses_event_time_as_sent_never_the_wall_clock():
  when = datetime.datetime(2024, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)
  a = build_event('click', {'user_id': 'u1', 'element_id': 'b', 'url': '/'},
                  tenant_id='acme', source='web', event_time=when)
  b = build_event('click', {'user_id': 'u1', 'element_id': 'b', 'url': '/'},
                  tenant_id='acme', source='web', event_time='2024-03-01T10:00:00Z')
  assert a['event_time'] == '2024-03-01T10:00:00Z'
  assert a['idempotency_key'] == b['idempotency_key']
  with pytest.raises(ContractError, match='event_time: a datetime without a zone'):
    build_event('click', {'user_id': 'u1', 'element_id': 'b', 'url': '/'},
                tenant_id='acme', source='web', event_time=when.replace(tzinfo=None))


@pytest.mark.parametrize('event_type, payload, fact, kind, message', [
    ('purchase', dict(PURCHASE, currency='eur'), FACT, 'schema_violation',
     'payload.currency: does not match [A-Z]{3}'),
    ('purchase', {'user_id': 'u1', 'amount_minor': 1, 'currency': 'EUR'}, FACT,
     'schema_violation', 'payload.order_id: missing'),
    ('page_view', {'user_id': 'u1', 'url': '/', 'duration_ms': -5}, FACT,
     'schema_violation', 'payload.duration_ms: must be >= 0'),
    ('click', {'user_id': 'u1', 'element_id': 'b', 'url': '/'},
     dict(FACT, tenant_id='Not A Tenant'), 'schema_violation',
     'tenant_id: does not match [a-z0-9][a-z0-9_-]{0,63}'),
    ('signup', {'user_id': 'u1'}, FACT, 'unknown_event_type',
     "event_type 'signup' is not registered"),
    ('click', {'user_id': 'u1', 'element_id': 'b', 'url': '/'},
     dict(FACT, schema_version='v2'), 'unsupported_schema_version',
     'schema_version v2: major 2 is not registered for click'),
])
def test_contract_breaking_payload_is_refused_with_the_field(
    tmp_path, event_type, payload, fact, kind, message):
  path = tmp_path / 'out.jsonl'
  with Producer(FileEmitter(str(path))) as producer:
    with pytest.raises(ContractError) as refused:
      producer.send(event_type, payload, **fact)
  assert (refused.value.kind, str(refused.value)) == (kind, message)
  assert producer.sent == 0 and path.read_bytes() == b''


@pytest.mark.parametrize('fmt', ['json', 'avro'])
def test_serialised_events_decode_to_the_same_event(fmt):
  event = build_event('page_view', {'user_id': 'u1', 'url': '/docs',
                                    'session_id': 's-1'},
                      schema_version='v1.1', **FACT)
  result, _ = decode_and_validate(RawRecord(serialize(event, fmt), 'x:1'))
  assert isinstance(result, Event)
  assert result.idempotency_key == event['idempotency_key']
  assert result.payload == {'user_id': 'u1', 'url': '/docs', 'referrer': None,
                            'duration_ms': None, 'session_id': 's-1'}


class _RecordingKafka(object):
  def __init__(self):
    self.produced = []

  def produce(self, topic, value, key, headers, on_delivery):
    self.produced.append((topic, value, key, dict(headers)))
    on_delivery(None, None)

  def poll(self, timeout):
    return 0

  def flush(self):
    return 0


def test_kafka_emitter_keys_by_tenant_and_user_with_idempotent_settings():
  kafka = _RecordingKafka()
  emitter = KafkaEmitter('broker:9092', 'events', producer=kafka)
  with Producer(emitter) as producer:
    producer.send('purchase', dict(PURCHASE), **FACT)
  [(topic, value, key, headers)] = kafka.produced
  assert (topic, key, headers['tenant_id']) == ('events', b'acme:u1', b'acme')
  assert json.loads(value)['payload'] == PURCHASE
  assert emitter.settings['enable.idempotence'] is True
  assert emitter.settings['acks'] == 'all'
  # librdkafka itself accepts these settings (no broker is contacted until a
  # message is produced, and none is here).
  confluent_kafka.Producer(dict(KAFKA_IDEMPOTENT_SETTINGS,
                                **{'bootstrap.servers': '127.0.0.1:9'}))


def test_command_line_sends_facts_and_refuses_bad_ones(tmp_path, capsys):
  out = tmp_path / 'events.jsonl'
  facts = [dict(FACT, event_type='purchase', payload=PURCHASE),
           dict(FACT, event_type='purchase', payload=dict(PURCHASE, amount_minor=-1)),
           dict(FACT, event_type='click', payload={'user_id': 'u1'})]
  stdin = io.StringIO(''.join(json.dumps(f) + '\n' for f in facts))
  assert producer_main(['--to', 'file:%s' % out], stdin=stdin) == 1
  captured = capsys.readouterr()
  assert captured.out.strip() == 'sent 1, refused 2'
  assert 'line 2 refused: payload.amount_minor: must be >= 0' in captured.err
  assert 'line 3 refused: payload.url: missing' in captured.err
  assert len(out.read_bytes().splitlines()) == 1


def test_retries_with_new_trace_ids_are_dropped_by_the_pipeline(tmp_path):
  """The same facts sent three times (a producer retrying): one row each."""
  events = tmp_path / 'events'
  with Producer(FileEmitter(str(events / 'a.jsonl'))) as producer:
    for attempt in range(3):
      for n in range(4):
        producer.send('click', {'user_id': 'u%d' % n, 'element_id': 'b',
                                'url': '/'}, **FACT)
  db = str(tmp_path / 'w.duckdb')
  run_module('pipelines.analytics', '--input', str(events / '*.jsonl'),
             '--hot_sink', 'duckdb:' + db, '--cold_path', str(tmp_path / 'cold'),
             '--runner', 'FnApiRunner')
  counts = metrics(db)
  assert (counts['input_records'], counts['events_written'],
          counts['duplicates']) == (12, 4, 8)
  assert query(db, 'SELECT count(DISTINCT trace_id) FROM events')[0][0] == 4
