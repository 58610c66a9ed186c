"""Message sources: Kafka (whose cross-language read cannot even be applied
offline: its pieces are tested alone) and the source flags. Pub/Sub is tested
for real against Google's emulator in `test_pubsub.py`."""
import collections

import pytest
from apache_beam.options.pipeline_options import StandardOptions

from pipelines.options import AnalyticsOptions, UsageError, parse_args
from schemas.records import RawRecord
from schemas.rows import dead_letter_row
from transforms.ingest.decode import decode_and_validate
from transforms.ingest.message_sources import kafka_consumer_config, kafka_record

SUBSCRIPTION = 'projects/my-project/subscriptions/events'


def test_a_letter_without_attributes_has_none():
  letter, _ = decode_and_validate(RawRecord(b'nope', 'a.jsonl:1'))
  assert letter.attributes is None
  assert dead_letter_row(letter, None)['attributes'] is None


def test_kafka_consumer_config_follows_the_seed_template():
  config = kafka_consumer_config('k1:9092,k2:9092', 'analytics-pipeline-v2')
  assert config == {
      'bootstrap.servers': 'k1:9092,k2:9092', 'group.id': 'analytics-pipeline-v2',
      'auto.offset.reset': 'latest', 'enable.auto.commit': 'false',
      'isolation.level': 'read_committed', 'max.poll.records': '500',
      'max.poll.interval.ms': '300000', 'session.timeout.ms': '30000',
      'heartbeat.interval.ms': '10000'}


def test_kafka_record_keeps_bytes_origin_and_headers():
  KafkaRecord = collections.namedtuple(
      'KafkaRecord', 'topic partition offset key value headers')
  record = kafka_record(KafkaRecord('events', 3, 42, b'acme:u1', b'{"a":1}',
                                    [('tenant_id', b'acme')]))
  assert record == RawRecord(b'{"a":1}', 'kafka:events/3/42', {'tenant_id': 'acme'})


@pytest.mark.parametrize('flags, message', [
    (['--input_subscription', 'projects/p/subscriptions/s'],
     '--input_subscription: expected projects/P/subscriptions/S'),
    (['--input_subscription', SUBSCRIPTION, '--input', 'x'],
     '--input_subscription: give one source, not also --input'),
    (['--kafka_topic', 'events'], '--kafka_bootstrap: give it together'),
    (['--kafka_topic', 'events', '--kafka_bootstrap', 'nohost'],
     '--kafka_bootstrap: expected host:port'),
    (['--kafka_topic', 'events', '--kafka_bootstrap', 'k:9092',
      '--kafka_offset_reset', 'middle'], 'argument --kafka_offset_reset: invalid'),
])
def test_bad_source_flags_name_the_flag(flags, message):
  with pytest.raises(UsageError) as refused:
    parse_args(flags)
  assert str(refused.value).startswith(message)


def test_a_message_source_makes_the_job_stream():
  options = parse_args(['--input_subscription', SUBSCRIPTION])
  assert options.view_as(StandardOptions).streaming
  options = parse_args(['--kafka_topic', 'events', '--kafka_bootstrap',
                        'k1:9092,k2:9092', '--kafka_commit_on_finalize=false'])
  assert options.view_as(StandardOptions).streaming
  assert options.view_as(AnalyticsOptions).kafka_commit_on_finalize is False
