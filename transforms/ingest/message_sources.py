"""Message sources for the production runners: Pub/Sub and Kafka, as RawRecords.

Both give the record's exact bytes, an origin that names the message (so a
redelivered message's dead letter is the same letter) and its attributes or
headers, which its dead letter keeps. Event time comes from the envelope after
decoding (`DecodeAndValidate` re-stamps each event); the source's own timestamp
(Pub/Sub publish time, or `timestamp_attribute`; Kafka's log-append time) only
drives the watermark.
"""
import apache_beam as beam

from schemas.records import RawRecord

__all__ = ['ReadPubSubRecords', 'ReadKafkaRecords', 'kafka_consumer_config',
           'pubsub_record', 'kafka_record']


def pubsub_record(message) -> RawRecord:
  """A `PubsubMessage` (with attributes) to a RawRecord."""
  return RawRecord(message.data, 'pubsub:%s' % (message.message_id or ''),
                   dict(message.attributes or {}) or None)


class ReadPubSubRecords(beam.PTransform):
  """Reads a Pub/Sub subscription (or a topic, through a subscription Beam
  creates) as RawRecords. Streaming only.

  Args:
    subscription: `projects/P/subscriptions/S`, or None.
    topic: `projects/P/topics/T`, or None (exactly one of the two).
    timestamp_attribute: a message attribute holding the source timestamp
      (RFC 3339 or millis) for the watermark; default: the publish time.
  """

  def __init__(self, subscription=None, topic=None, timestamp_attribute=None):
    super().__init__()
    if bool(subscription) == bool(topic):
      raise ValueError('give exactly one of subscription and topic')
    self._subscription, self._topic = subscription, topic
    self._timestamp_attribute = timestamp_attribute

  def expand(self, pbegin):
    return (pbegin
            | 'ReadPubSub' >> beam.io.ReadFromPubSub(
                topic=self._topic, subscription=self._subscription,
                with_attributes=True,
                timestamp_attribute=self._timestamp_attribute)
            | 'AsRawRecords' >> beam.Map(pubsub_record))


def kafka_consumer_config(bootstrap, group_id, offset_reset='latest',
                          max_poll_records=500) -> dict:
  """The consumer settings of the seed's configuration template: no auto
  commit (offsets are committed when Beam finalizes a bundle), read_committed,
  bounded polls and session timeouts."""
  return {
      'bootstrap.servers': bootstrap,
      'group.id': group_id,
      'auto.offset.reset': offset_reset,
      'enable.auto.commit': 'false',
      'isolation.level': 'read_committed',
      'max.poll.records': str(max_poll_records),
      'max.poll.interval.ms': '300000',
      'session.timeout.ms': '30000',
      'heartbeat.interval.ms': '10000',
  }


def kafka_record(message) -> RawRecord:
  """A `KafkaRecord` (ReadFromKafka with metadata) to a RawRecord."""
  headers = {k: (v.decode('utf-8', 'replace') if isinstance(v, bytes) else v)
             for k, v in (message.headers or [])}
  return RawRecord(message.value or b'', 'kafka:%s/%d/%d' % (
      message.topic, message.partition, message.offset), headers or None)


class ReadKafkaRecords(beam.PTransform):
  """Reads Kafka topics as RawRecords through Beam's cross-language
  `ReadFromKafka` (a Java expansion service: see docs/operations.md for the
  jar or service a runner needs).

  Args:
    consumer_config: `kafka_consumer_config(...)`.
    topics: topic names.
    commit_offset_in_finalize: commit offsets when Beam finalizes a bundle, so
      a restart resumes after the last processed record (the pipeline's dedup
      drops what a replayed bundle repeats).
    expansion_service: `host:port` of a running expansion service, or None for
      Beam's default (which starts the Kafka IO jar, fetched from Maven).
  """

  def __init__(self, consumer_config, topics, commit_offset_in_finalize=True,
               expansion_service=None):
    super().__init__()
    self._config, self._topics = consumer_config, list(topics)
    self._commit = commit_offset_in_finalize
    self._expansion_service = expansion_service

  def expand(self, pbegin):
    from apache_beam.io.kafka import ReadFromKafka
    kwargs = {}
    if self._expansion_service:
      kwargs['expansion_service'] = self._expansion_service
    return (pbegin
            | 'ReadKafka' >> ReadFromKafka(
                consumer_config=self._config, topics=self._topics,
                with_metadata=True,
                commit_offset_in_finalize=self._commit, **kwargs)
            | 'AsRawRecords' >> beam.Map(kafka_record))
