"""Pub/Sub on the local streaming runner, acknowledged only once stored.

Beam's local Pub/Sub read (what the DirectRunner swaps in for
`ReadFromPubSub`) acknowledges each message as soon as it pulls it, so a
local job killed mid-stream loses every message it had pulled and not yet
committed (on Dataflow the runner acknowledges after its checkpoint). Here
the local runner reads a subscription itself and acknowledges a message only
when the hot warehouse holds its outcome:

* a message that decodes to a valid event is held once `events` holds its
  idempotency key (its own row, or an earlier copy's: a retry deduplicated
  or already stored is held too);
* any other message is held once `dead_letters` holds a letter with its
  origin (`pubsub:<message id>`; enrichment and sink failures included);
* a blank message is acknowledged at once (it is not a record).

Until then its acknowledgement deadline is extended. A job killed at any
moment leaves unacknowledged exactly what no commit holds; Pub/Sub delivers
it again to the next job, whose dedup and the warehouse's keys store each
event once and each letter once. Messages are fed to the pipeline through a
TestStream from Beam's gRPC test-stream service, as `transforms/ingest/local_watch.py` does for
files: each pull's messages arrive stamped with the time they were pulled,
then the watermark advances to the wall clock and processing time by the
poll interval.

Reading a topic (`--input_topic`) still goes through Beam's read, which
creates its own subscription.
"""
import logging
import time

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.testing.test_stream import (ElementEvent, ProcessingTimeEvent,
                                             TestStream, WatermarkEvent)
from apache_beam.testing.test_stream_service import TestStreamServiceController
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from schemas.records import DeadLetter
from schemas.registry import load_registry
from transforms.batch import Batch
from transforms.ingest.decoding import decode_and_validate
from transforms.ingest.local_watch import _WIRE_SCALE, _wire_duration, _wire_time
from transforms.ingest.message_sources import pubsub_record

__all__ = ['LocalPubSubRead', 'outcome_of', 'HeldInDuckDB', 'HeldInBigQuery']

_CODER = PickleCoder()
_LOG = logging.getLogger(__name__)
# Seconds a pulled message's deadline is set to, extended while it waits.
ACK_DEADLINE_S = 20


def outcome_of(record, registry):
  """What the warehouse holds once it holds this record: ('key', its
  idempotency key), ('letter', its origin), or None (blank: nothing)."""
  result, _ = decode_and_validate(record, registry)
  if result is None:
    return None
  if isinstance(result, DeadLetter):
    return 'letter', record.origin
  return 'key', result.idempotency_key


class HeldInDuckDB(object):
  """Which outcomes a DuckDB warehouse holds (read in this process, which
  is the one committing to it: the local runner runs in it)."""

  def __init__(self, db_path):
    self._db_path = db_path

  def __call__(self, keys, origins):
    # A plain connection (the commit's settings, no DDL): the tables exist
    # once a commit made them, and until then the check fails and waits.
    from transforms.sinks.duckdb_connection import open_with_retry
    con = open_with_retry(self._db_path)
    try:
      held = {('key', k) for (k,) in con.execute(
          'SELECT idempotency_key FROM events WHERE idempotency_key IN '
          '(SELECT unnest($k))', {'k': sorted(keys)}).fetchall()}
      held |= {('letter', o) for (o,) in con.execute(
          'SELECT origin FROM dead_letters WHERE origin IN (SELECT unnest($o))',
          {'o': sorted(origins)}).fetchall()}
      return held
    finally:
      con.close()


class HeldInBigQuery(object):
  """Which outcomes a BigQuery dataset holds."""

  def __init__(self, project, dataset, endpoint=None):
    self._args = (project, dataset, endpoint)

  def __call__(self, keys, origins):
    from google.cloud import bigquery
    from transforms.enrich.stores import bigquery_client
    project, dataset, endpoint = self._args
    client = bigquery_client(project, endpoint)
    try:
      held = set()
      for kind, table, column, values in (
          ('key', 'events', 'idempotency_key', keys),
          ('letter', 'dead_letters', 'origin', origins)):
        if not values:
          continue
        rows = client.query(
            'SELECT %s FROM `%s.%s.%s` WHERE %s IN UNNEST(@v)' % (
                column, project, dataset, table, column),
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ArrayQueryParameter('v', 'STRING', sorted(values))]))
        held |= {(kind, row[0]) for row in rows.result()}
      return held
    finally:
      client.close()


def pubsub_events(subscription, held, interval_s=1.0, duration_s=None,
                  registry_path=None, batch_size=None, subscriber=None,
                  clock=time.time, max_messages=1000):
  """Yields TestStream events for the messages of `subscription`, pulling
  every `interval_s`; acknowledges each message once `held(keys, origins)`
  says the warehouse holds its outcome, extending the deadline of the
  others. Stops after `duration_s` (None: never)."""
  if subscriber is None:
    from google.cloud import pubsub_v1
    subscriber = pubsub_v1.SubscriberClient()
  registry = load_registry(registry_path)
  waiting = {}  # ack id -> outcome
  started = last_extended = clock()
  from google.api_core.exceptions import DeadlineExceeded
  while True:
    try:
      received_messages = subscriber.pull(request={
          'subscription': subscription, 'max_messages': max_messages},
          timeout=max(interval_s, 1.0)).received_messages
    except DeadlineExceeded:  # Pub/Sub held the pull open: nothing came
      received_messages = []
    now = _wire_time(clock())
    records, blank, pulled = [], [], []
    for received in received_messages:
      record = pubsub_record(received.message)
      outcome = outcome_of(record, registry)
      if outcome is None:
        blank.append(received.ack_id)
      else:
        waiting[received.ack_id] = outcome
        pulled.append(received.ack_id)
      records.append(record)
    if pulled:  # time for the pipeline to commit them
      subscriber.modify_ack_deadline(request={
          'subscription': subscription, 'ack_ids': pulled,
          'ack_deadline_seconds': ACK_DEADLINE_S})
    if records:
      size = batch_size or len(records)
      for start in range(0, len(records), size):
        chunk = records[start:start + size]
        yield ElementEvent([beam.window.TimestampedValue(Batch(chunk), now)]
                           if batch_size else
                           [beam.window.TimestampedValue(r, now) for r in chunk])
    if blank:
      subscriber.acknowledge(request={'subscription': subscription,
                                      'ack_ids': blank})
    _settle(subscriber, subscription, waiting, held)
    if waiting and clock() - last_extended > ACK_DEADLINE_S / 3:
      subscriber.modify_ack_deadline(request={
          'subscription': subscription, 'ack_ids': list(waiting),
          'ack_deadline_seconds': ACK_DEADLINE_S})
      last_extended = clock()
    yield WatermarkEvent(_wire_time(clock()))
    if duration_s and clock() - started >= duration_s:
      yield WatermarkEvent(Timestamp(micros=MAX_TIMESTAMP.micros * _WIRE_SCALE))
      return
    if not received_messages:
      time.sleep(interval_s)
    yield ProcessingTimeEvent(_wire_duration(interval_s))


def _settle(subscriber, subscription, waiting, held):
  """Acknowledges the waiting messages the warehouse holds."""
  if not waiting:
    return
  keys = {v for k, v in waiting.values() if k == 'key'}
  origins = {v for k, v in waiting.values() if k == 'letter'}
  try:
    found = held(keys, origins)
  except Exception as e:  # the warehouse busy or not made yet: next time
    _LOG.info('local Pub/Sub read: nothing acknowledged this time: %s', e)
    return
  done = [ack for ack, outcome in waiting.items() if outcome in found]
  for start in range(0, len(done), 1000):
    subscriber.acknowledge(request={'subscription': subscription,
                                    'ack_ids': done[start:start + 1000]})
  for ack in done:
    del waiting[ack]


class _Reader(object):
  """The reader interface `TestStreamServiceController` expects."""

  def __init__(self, **kwargs):
    self._kwargs = kwargs

  def read_multiple(self, unused_tags):
    for event in pubsub_events(**self._kwargs):
      yield event.to_runner_api(_CODER)


class LocalPubSubRead(beam.PTransform):
  """Streaming, local: RawRecords of a Pub/Sub subscription, each message
  acknowledged once the hot warehouse holds its outcome.

  Args:
    subscription: `projects/P/subscriptions/S`.
    held: a callable (keys, origins) -> the outcomes the warehouse holds
      (`HeldInDuckDB`, `HeldInBigQuery`).
    interval_s: seconds between pulls when the subscription is empty.
    duration_s: stop after this many seconds (None: until the job ends).
    registry_path: the schema registry (to know each message's outcome).
    batch_size: records per element, as `Batch`es; None: one per element.
  """

  def __init__(self, subscription, held, interval_s=1.0, duration_s=None,
               registry_path=None, batch_size=None):
    super().__init__()
    self._batch_size = batch_size
    self._controller = TestStreamServiceController(_Reader(
        subscription=subscription, held=held, interval_s=interval_s,
        duration_s=duration_s, registry_path=registry_path,
        batch_size=batch_size))
    self._controller.start()

  def expand(self, pbegin):
    read = pbegin | 'PullAndHold' >> TestStream(
        coder=_CODER, endpoint=self._controller.endpoint)
    if self._batch_size:
      read.element_type = Batch
    return read
