"""Dedup on batches: exact per shard; on bounded input every key to the end,
in streaming each key forgotten once the watermark passes its expiry, so a
shard holds only the last TTL of keys."""
import datetime
import hashlib
import pickle
import random

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from tests.helpers import options, sample_events
from tests.dedup.test_dedup import FakeState, FakeTimer
from schemas.rows import events_table
from transforms.ingest.decoding import NOT_PROCESSED
from transforms.dedup.shards import (DedupBatches, ExpiringKeys, KeySet,
                                      _ExpiringDedupBatchFn, compact_key,
                                      expiry_step_us)
from transforms.counters import DUPLICATES
from transforms.views.specs import micros

HOUR = 3600


def _batch(events):
  """An events batch, as the stages pass them."""
  return events_table(events, NOT_PROCESSED, with_source=True)


def _facts(n, hours_apart):
  """n distinct facts (their own keys), `hours_apart` hours of event time
  apart, in order."""
  base = sample_events(1)[0]
  return [base._replace(
      idempotency_key=hashlib.sha256(b'%d' % i).hexdigest(),
      trace_id='t-%d' % i,
      event_time=base.event_time + datetime.timedelta(hours=hours_apart * i))
      for i in range(n)]


def test_key_set_keeps_its_latest_expiry():
  keys = KeySet()
  assert keys.latest is None
  for expires in (50, 20, 90, 20):
    keys.keep_until(expires)
  keys.keys.update('abc')
  assert keys.latest == 90
  copy = pickle.loads(pickle.dumps(keys))
  assert copy.keys == {'a', 'b', 'c'} and copy.latest == 90


def test_compact_keys_are_equal_exactly_when_the_keys_are():
  key = 'ab' * 32
  others = ['ab' * 31 + 'ac', key.upper(), '0x' + key[2:], ' ' + key[1:],
            key[:-1], key + '0', '_'.join([key[:32], key[33:]]), 'anything',
            '0' * 64]
  compact = compact_key(key)
  assert compact == compact_key(str(key)) and isinstance(compact, int)
  assert len({compact} | {compact_key(o) for o in others}) == 1 + len(others)
  assert compact_key('anything') == 'anything'
  assert compact_key('0' * 64) == 0 != compact_key('0' * 63 + '1')


def test_batched_dedup_is_exact_over_many_ttls_of_event_time():
  """Facts over ten days, TTL one hour, every fact sent again in a later
  batch: each kept once, each retry counted, on the runner users run."""
  facts = _facts(40, 6)
  keys = [f.idempotency_key for f in facts]
  batches = [facts[i:i + 7] for i in range(0, 40, 7)] + [facts[::-1]]
  p = beam.Pipeline('FnApiRunner', options=PipelineOptions())
  kept = (p | beam.Create([_batch(b) for b in batches])
          | DedupBatches(ttl_s=HOUR)).events | (
          beam.FlatMap(lambda b: b.column('idempotency_key').to_pylist()))
  assert_that(kept, equal_to(keys))
  result = p.run()
  result.wait_until_finish()
  counted = result.metrics().query(MetricsFilter().with_name(DUPLICATES))
  assert sum(c.committed for c in counted['counters']) == 40


def test_expiring_keys_forget_what_is_due_and_survive_pickling():
  keys = ExpiringKeys()
  assert keys.first_copies(list('abcdb'), [30, 10, 20, 40, 50]) == [0, 1, 2, 3]
  assert keys.earliest == 10 and 'b' in keys and len(keys) == 4
  assert keys.expire(20) == 2
  assert 'b' not in keys and 'c' not in keys and 'a' in keys
  assert keys.earliest == 30
  copy = pickle.loads(pickle.dumps(keys))
  assert [copy.expiry_of(k) for k in 'abcd'] == [30, None, None, 40]
  assert copy.earliest == 30 and len(copy) == 2
  assert keys.expire(100) == 2 and keys.earliest is None and not len(keys)


def test_expiring_keys_keep_first_copies_exactly_as_a_set_would():
  """Random batches of contract keys and other strings (among them ones
  that differ by a trailing NUL, or spell a contract key in capitals): the
  positions kept are those a set of seen keys keeps, the arrays stay
  sorted, and expiring forgets exactly the keys timed at or before it."""
  rng = random.Random(5)
  pool = ([hashlib.sha256(b'%d' % i).hexdigest() for i in range(300)]
          + ['k', 'k\x00', 'k\x00\x00', '', '\u00e9', 'e\u0301', 'A' * 200]
          + [hashlib.sha256(b'%d' % i).hexdigest().upper() for i in range(5)])
  keys, seen = ExpiringKeys(), {}
  for round_ in range(40):
    batch = [rng.choice(pool) for _ in range(rng.randrange(0, 60))]
    expiries = [rng.randrange(1000) for _ in batch]
    expected = []
    for i, (key, at) in enumerate(zip(batch, expiries)):
      if key not in seen:
        seen[key] = at
        expected.append(i)
    assert keys.first_copies(batch, expiries) == expected
    assert list(keys.keys) == sorted(keys.keys) and len(keys) == len(seen)
    if round_ % 5 == 4:
      now = rng.randrange(1000)
      forgotten = [k for k, at in seen.items() if at <= now]
      assert keys.expire(now) == len(forgotten)
      for k in forgotten:
        del seen[k]
    keys = pickle.loads(pickle.dumps(keys))
  assert all(keys.expiry_of(k) == at for k, at in seen.items())
  assert all(k not in keys for k in pool if k not in seen)


def test_a_key_is_timed_for_its_ttl_and_at_most_one_step_more():
  assert expiry_step_us(86400) == 900 * 1000000   # 15 minutes for a day
  assert expiry_step_us(0) == 1000000              # at least a second
  fn = _ExpiringDedupBatchFn(ttl_s=86400)
  fn.setup()
  state, timer = FakeState(), FakeTimer()
  [fact, old] = _facts(2, 0)
  arrived = Timestamp(micros=micros(fact.event_time))
  assert list(fn.process((0, _batch([fact])), arrived, state, timer))
  expires = micros(fact.event_time) + 86400 * 1000000
  timed = state.value.expiry_of(fact.idempotency_key)
  assert expires <= timed < expires + expiry_step_us(86400)
  assert timer.at == Timestamp(micros=timed)
  # A fact arriving two days after its event time is kept for the TTL from
  # its arrival (the watermark then), not from its event time.
  late = Timestamp(micros=micros(old.event_time) + 2 * 86400 * 1000000)
  assert list(fn.process((0, _batch([old])), late, state, timer))
  timed = state.value.expiry_of(old.idempotency_key)
  assert late.micros + 86400 * 1000000 <= timed < (
      late.micros + 86400 * 1000000 + expiry_step_us(86400))


def test_streaming_shard_holds_only_the_last_ttl_of_keys():
  """The DoFn alone: a fact every hour, TTL 3 hours, the timer fired as the
  watermark reaches it: the shard never holds more than the facts of the
  last TTL (and one step), and a retry within the TTL is still dropped."""
  fn = _ExpiringDedupBatchFn(ttl_s=3 * HOUR)
  fn.setup()
  state, timer = FakeState(), FakeTimer()
  facts = _facts(48, 1)
  held = []
  for i, fact in enumerate(facts):
    watermark = micros(fact.event_time)
    while timer.at is not None and timer.at.micros <= watermark:
      at, timer.at = timer.at, None
      fn.expire(at, state, timer)
    kept = list(fn.process((0, _batch([fact, facts[max(0, i - 2)]])),
                           Timestamp(micros=watermark), state, timer))
    assert kept[0].column('trace_id').to_pylist() == [fact.trace_id]
    held.append(len(state.value))
  assert max(held) <= 4 and held[-1] == held[10], held


def _streaming():
  opts = options(runner='BundleBasedDirectRunner')
  opts.view_as(StandardOptions).streaming = True
  return opts


def test_streaming_batches_drop_retries_within_ttl_and_forget_after_it():
  """On the local streaming runner: a retry within the TTL is dropped; once
  the watermark has passed the key's expiry (TTL and one step), a copy
  counts as new, as with the per-record dedup."""
  first, other = _facts(2, 0)
  retry = first._replace(trace_id='t-retry')
  late_copy = first._replace(trace_id='t-after-ttl')
  t0 = micros(first.event_time) / 1e6
  ttl = HOUR
  past_expiry = t0 + ttl + expiry_step_us(ttl) / 1e6 + 1
  stream = (TestStream()
            .advance_watermark_to(t0 - 10)
            .add_elements([_batch([first])])
            .add_elements([_batch([retry, other])])
            .advance_watermark_to(t0 + ttl - 1)
            .add_elements([_batch([retry])])
            .advance_watermark_to(past_expiry)
            .add_elements([_batch([late_copy])])
            .advance_watermark_to_infinity())
  with TestPipeline(options=_streaming()) as p:
    kept = ((p | stream | DedupBatches(ttl_s=ttl, streaming=True)).events
            | beam.FlatMap(lambda b: b.column('trace_id').to_pylist()))
    assert_that(kept, equal_to(['t-0', 't-1', 't-after-ttl']))
