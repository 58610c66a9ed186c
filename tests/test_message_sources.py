"""Pub/Sub (with a patched subscriber client: no emulator runs offline) and
Kafka (whose cross-language read cannot even be applied offline: its pieces are
tested alone), and the source flags."""
import collections
import json
import threading
import time
from unittest import mock

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.options import AnalyticsOptions, UsageError, parse_args
from schemas.records import Event, RawRecord
from schemas.rows import dead_letter_row
from tests.helpers import as_json, envelope
from transforms.decode import DecodeAndValidate, decode_and_validate
from transforms.message_sources import (ReadPubSubRecords, kafka_consumer_config,
                                        kafka_record)

SUBSCRIPTION = 'projects/my-project/subscriptions/events'
_SEEN = collections.defaultdict(list)
_LOCK = threading.Lock()


def _pull_response(messages):
  from google.cloud import pubsub
  from google.protobuf import timestamp_pb2
  response = pubsub.types.PullResponse()
  for n, (data, attributes) in enumerate(messages):
    received = pubsub.types.ReceivedMessage()
    received.ack_id = 'ack-%d' % n
    received.message.data = data
    received.message.message_id = 'm-%d' % n
    received.message.publish_time = timestamp_pb2.Timestamp(seconds=1709287200 + n)
    for key, value in attributes.items():
      received.message.attributes[key] = value
    response.received_messages.append(received)
  return response


class _Keep(beam.DoFn):
  """Collects elements in this module's `_SEEN` (a top-level class pickles by
  reference, so the in-process runner's copy appends to the same list)."""

  def __init__(self, tag):
    self._tag = tag

  def process(self, element):
    with _LOCK:
      _SEEN[self._tag].append(element)


def test_pubsub_messages_are_decoded_with_attributes_kept():
  _SEEN.clear()
  good = as_json(envelope())
  messages = [(good, {'producer': 'shop'}), (b'{"broken', {'producer': 'legacy'})]
  with mock.patch('google.cloud.pubsub.SubscriberClient') as client:
    client.return_value.pull.side_effect = (
        [_pull_response(messages)] + [_pull_response([])] * 100000)
    pipeline = beam.Pipeline(options=PipelineOptions(
        ['--runner=BundleBasedDirectRunner', '--streaming']))
    decoded = (pipeline | ReadPubSubRecords(subscription=SUBSCRIPTION)
               | DecodeAndValidate())
    _ = decoded.events | 'Events' >> beam.ParDo(_Keep('events'))
    _ = decoded.dead_letters | 'Letters' >> beam.ParDo(_Keep('letters'))
    result = pipeline.run()
    deadline = time.time() + 60
    while time.time() < deadline and (not _SEEN['events'] or not _SEEN['letters']):
      time.sleep(0.2)
    result.cancel()
  [event] = _SEEN['events']
  [letter] = _SEEN['letters']
  assert isinstance(event, Event) and event.raw == good
  assert event.origin == 'pubsub:m-0'
  assert (letter.error_kind, letter.origin, letter.raw) == (
      'malformed', 'pubsub:m-1', b'{"broken')
  assert letter.attributes == {'producer': 'legacy'}
  row = dead_letter_row(letter, event.event_time)
  assert json.loads(row['attributes']) == {'producer': 'legacy'}
  client.return_value.acknowledge.assert_called()


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
