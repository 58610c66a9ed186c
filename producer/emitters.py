"""Where serialised events go: files, Pub/Sub or Kafka.

Every emitter keys a message by `tenant_id:user_id`, so the events of one user
keep their order (a Kafka partition key, a Pub/Sub ordering key), and puts the
envelope's routing fields in message attributes / headers, which the pipeline
keeps on dead letters.
"""
import os

__all__ = ['FileEmitter', 'PubSubEmitter', 'KafkaEmitter', 'message_key',
           'message_attributes', 'KAFKA_IDEMPOTENT_SETTINGS']

# The Kafka producer settings that make retries safe: the broker drops a resent
# batch (idempotence), every in-sync replica has it before it counts (acks=all),
# and ordering holds per partition with up to 5 batches in flight.
KAFKA_IDEMPOTENT_SETTINGS = {
    'enable.idempotence': True,
    'acks': 'all',
    'max.in.flight.requests.per.connection': 5,
    'retries': 2147483647,
    'compression.type': 'zstd',
}


def message_key(event: dict) -> str:
  return '%s:%s' % (event['tenant_id'], event['payload']['user_id'])


def message_attributes(event: dict) -> dict:
  return {name: event[name] for name in (
      'event_type', 'schema_version', 'tenant_id', 'idempotency_key', 'trace_id')}


class FileEmitter(object):
  """Appends one line per event to a local file (JSON lines)."""

  def __init__(self, path):
    self.path = path
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    self._file = open(path, 'ab')

  def emit(self, data: bytes, event: dict):
    if b'\n' in data:
      raise ValueError('a JSON lines file cannot hold binary Avro; use '
                       '--format json for files')
    self._file.write(data + b'\n')

  def close(self):
    self._file.close()


class PubSubEmitter(object):
  """Publishes to a Pub/Sub topic (`projects/P/topics/T`) with an ordering key.

  Args:
    topic: the topic path.
    publisher: a `pubsub_v1.PublisherClient` (default: one with message ordering
      on, using the environment's credentials).
  """

  def __init__(self, topic, publisher=None):
    if publisher is None:
      from google.cloud import pubsub_v1
      publisher = pubsub_v1.PublisherClient(
          publisher_options=pubsub_v1.types.PublisherOptions(
              enable_message_ordering=True))
    self.topic, self._publisher, self._futures = topic, publisher, []

  def emit(self, data: bytes, event: dict):
    self._futures.append(self._publisher.publish(
        self.topic, data, ordering_key=message_key(event),
        **message_attributes(event)))

  def close(self):
    # Wait for every publish: an error raises here instead of being lost.
    for future in self._futures:
      future.result()
    self._futures = []


class KafkaEmitter(object):
  """Produces to a Kafka topic with idempotent producer settings.

  Args:
    bootstrap: `host:port[,host:port]`.
    topic: the topic.
    producer: a `confluent_kafka.Producer` (default: one with
      `KAFKA_IDEMPOTENT_SETTINGS`); `settings` are added to the defaults.
  """

  def __init__(self, bootstrap, topic, producer=None, **settings):
    self.topic = topic
    self.settings = dict(KAFKA_IDEMPOTENT_SETTINGS, **settings)
    self.settings['bootstrap.servers'] = bootstrap
    if producer is None:
      import confluent_kafka
      producer = confluent_kafka.Producer(self.settings)
    self._producer = producer
    self._errors = []

  def _delivered(self, error, message):
    if error is not None:
      self._errors.append(error)

  def emit(self, data: bytes, event: dict):
    self._producer.produce(
        self.topic, value=data, key=message_key(event).encode('utf-8'),
        headers=[(k, v.encode('utf-8'))
                 for k, v in message_attributes(event).items()],
        on_delivery=self._delivered)
    self._producer.poll(0)

  def close(self):
    remaining = self._producer.flush()
    if remaining or self._errors:
      raise IOError('kafka: %d messages not delivered (%s)' % (
          remaining + len(self._errors), self._errors[:3]))
