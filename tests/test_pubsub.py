"""Pub/Sub for real: Google's emulator (started by the test on a free
loopback port), the producer library publishing to it, and the pipeline
streaming a generated stream from it into both tiers.

The emulator comes with Google's Debian packages (`google-cloud-cli-pubsub-
emulator`), installed on the Debian 12 machines of this kind. A Debian 13
machine lacks them: there these tests skip with a message naming `gcloud`
(the README says so); every other test runs.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipelines.generate import generate
from producer import Producer
from producer.emitters import PubSubEmitter
from tests.cli import ROOT, query
from tests.servers import PubSubEmulator
from tests.test_histories import assert_exact

pytestmark = pytest.mark.skipif(
    shutil.which('gcloud') is None,
    reason='the Pub/Sub emulator needs gcloud (Google\'s Debian packages, '
    'missing on Debian 13 machines of this kind)')

PROJECT = 'test-proj'


@pytest.fixture(scope='module')
def emulator():
  server = PubSubEmulator(PROJECT).start()
  previous = os.environ.get('PUBSUB_EMULATOR_HOST')
  os.environ['PUBSUB_EMULATOR_HOST'] = server.host  # the clients find it
  try:
    yield server
  finally:
    if previous is None:
      os.environ.pop('PUBSUB_EMULATOR_HOST', None)
    else:
      os.environ['PUBSUB_EMULATOR_HOST'] = previous
    server.stop()


def _topic_and_subscription(name):
  from google.cloud import pubsub_v1
  publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
  topic = publisher.topic_path(PROJECT, name)
  subscription = subscriber.subscription_path(PROJECT, name + '-sub')
  publisher.create_topic(name=topic)
  subscriber.create_subscription(request={
      'name': subscription, 'topic': topic, 'enable_message_ordering': True,
      'ack_deadline_seconds': 30})
  return topic, subscription, subscriber


def test_the_producer_publishes_with_ordering_key_and_attributes(emulator):
  from google.cloud import pubsub_v1
  topic, subscription, subscriber = _topic_and_subscription('produced')
  publisher = pubsub_v1.PublisherClient(
      publisher_options=pubsub_v1.types.PublisherOptions(
          enable_message_ordering=True))
  with Producer(PubSubEmitter(topic, publisher), fmt='json') as producer:
    sent = [producer.send('purchase', {'user_id': 'u1', 'order_id': 'o-%d' % i,
                                       'amount_minor': 100 + i,
                                       'currency': 'EUR'},
                          tenant_id='acme', source='shop',
                          event_time='2024-03-01T10:00:0%dZ' % i)
            for i in range(3)]
  got = subscriber.pull(subscription=subscription, max_messages=10,
                        timeout=10).received_messages
  assert len(got) == 3
  for message in got:
    assert message.message.ordering_key == 'acme:u1'
    attributes = dict(message.message.attributes)
    assert attributes['tenant_id'] == 'acme'
    assert attributes['event_type'] == 'purchase'
  keys = {json.loads(m.message.data)['idempotency_key'] for m in got}
  assert keys == {e['idempotency_key'] for e in sent}


def _publish_lines(topic, files):
  """Every line of the generated files as one message, with attributes
  naming where it came from (kept on a dead letter)."""
  from google.cloud import pubsub_v1
  publisher = pubsub_v1.PublisherClient()
  futures = []
  for path in files:
    with open(path, 'rb') as f:
      for number, line in enumerate(f.read().split(b'\n')[:-1], 1):
        futures.append(publisher.publish(
            topic, line, source_file=os.path.basename(path),
            line=str(number)))
  for future in futures:
    future.result()
  return len(futures)


def _start_job(subscription, data, db, cold):
  return subprocess.Popen(
      [sys.executable, '-m', 'pipelines.analytics', '--streaming',
       '--input_subscription', subscription, '--profiles',
       data + '/profiles.jsonl', '--hot_sink', 'duckdb:' + db, '--cold_path',
       cold, '--runner', 'DirectRunner', '--allowed_lateness', '100000000',
       '--watch_interval_s', '0.5'],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _counts(db):
  """(events, dead letters, outbox rows), or None while the job holds the
  file."""
  if not os.path.exists(db):
    return None
  try:
    return tuple(query(db, 'SELECT count(*) FROM %s' % t)[0][0]
                 for t in ('events', 'dead_letters', 'cold_outbox'))
  except Exception:  # the job holds the file: ask again
    return None


def _wait_for(job, db, expected, seconds=240):
  deadline = time.monotonic() + seconds
  counts = None
  while time.monotonic() < deadline:
    assert job.poll() is None, job.communicate()[1][-3000:]
    counts = _counts(db) or counts
    if counts == expected:
      return counts
    time.sleep(1)
  raise AssertionError('the tables held %r, not %r' % (counts, expected))


def _kill(job):
  os.killpg(job.pid, signal.SIGKILL)
  job.wait(timeout=30)


def _expected(path):
  """(unique events, bad records) among the lines of a generated file."""
  from schemas.records import RawRecord
  from schemas.registry import load_registry
  from transforms.ingest.decoding import decode_records
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')[:-1]
  decoded = decode_records([RawRecord(l, 'x') for l in lines], load_registry())
  return ({e.idempotency_key for e in decoded.events}, len(decoded.letters))


def test_a_job_killed_mid_stream_and_started_again_loses_and_doubles_nothing(
    emulator, tmp_path):
  """A generated stream from Pub/Sub in two waves: the job stores the first,
  is killed (SIGKILL) just after pulling the second, and a new job on the
  same subscription finishes it. The local read acknowledges only what a
  commit holds, so what the killed job pulled comes back: every event is
  stored once, every bad record is one letter (with its message's
  attributes), the views and the cold tier are exact."""
  data = str(tmp_path / 'data')
  manifest = generate(data, events=600, users=20, tenants=2, files=2, seed=13)
  files = sorted(glob.glob(data + '/events/*.jsonl'))
  topic, subscription, _ = _topic_and_subscription('stream')
  first_keys, first_bad = _expected(files[0])
  db, cold = str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')
  job = _start_job(subscription, data, db, cold)
  try:
    _publish_lines(topic, files[:1])
    _wait_for(job, db, (len(first_keys), first_bad, 0))
    _publish_lines(topic, files[1:])
    time.sleep(1.5)  # pulled, and not all committed
  finally:
    _kill(job)
  at_kill = _counts(db)
  job = _start_job(subscription, data, db, cold)
  bad = sum(manifest['bad'].values())
  try:
    final = _wait_for(job, db, (manifest['unique_events'], bad, 0))
  finally:
    _kill(job)
  print('killed with %r stored (events, letters, outbox); after the restart '
        '%r' % (at_kill, final))
  assert_exact(db, cold)
  # The message's attributes are kept on its dead letter.
  attributes = [json.loads(a) for (a,) in query(
      db, 'SELECT attributes FROM dead_letters')]
  assert len(attributes) == bad and all(
      set(a) == {'source_file', 'line'} for a in attributes)
