"""Enrichment: side input and cached lookups agree; the lookup path degrades
instead of failing (real redis-server, started by the tests)."""
import gzip
import json
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import RawRecord
from tests.helpers import as_json, envelope, options
from schemas.rows import events_table
from transforms.ingest.decode import decode_and_validate
from transforms.ingest.decoding import NOT_PROCESSED
from transforms.enrich.side_input import EnrichFromSideInput, ReadProfiles
from transforms.enrich.lookup import (ENRICHMENT_FAILED_TAG, EnrichWithLookups,
                               LookupSettings, ProfileLookupHandler)
from transforms.enrich.profiles import (Profile, ProfileError, newest_profiles,
                                 read_newest_profiles)
from transforms.enrich.resilience import RetryPolicy, TransientError
from transforms.enrich.stores import DuckDBProfileStore

PROFILES = [
    {'tenant_id': 'acme', 'user_id': 'u1', 'tier': 'free', 'region': 'eu',
     'updated_at': '2024-01-01T00:00:00Z'},
    {'tenant_id': 'acme', 'user_id': 'u1', 'tier': 'pro', 'region': 'us',
     'updated_at': '2024-02-01T00:00:00Z'},
    {'tenant_id': 'acme', 'user_id': 'u2', 'tier': 'enterprise', 'region': 'ap',
     'updated_at': '2024-01-01T00:00:00+05:00'},
    {'tenant_id': 'other', 'user_id': 'u1', 'tier': 'free', 'region': 'eu',
     'updated_at': '2024-03-01T00:00:00Z'},
]
FAST_RETRY = RetryPolicy(max_retries=2, initial_s=0.01, max_s=0.02, multiplier=2)


def _profiles_file(tmp_path):
  path = tmp_path / 'profiles.jsonl'
  path.write_text(''.join(json.dumps(p) + '\n' for p in reversed(PROFILES)))
  return str(path)


def _events():
  raw = [as_json(envelope(payload__user_id=u, tenant_id=t, trace_id='t-%s%s' % (t, u)))
         for t, u in [('acme', 'u1'), ('acme', 'u2'), ('acme', 'u3'), ('other', 'u1')]]
  return [decode_and_validate(RawRecord(r))[0] for r in raw]


EXPECTED = [('acme', 'u1', 'pro', 'us'), ('acme', 'u2', 'enterprise', 'ap'),
            ('acme', 'u3', 'unknown', 'unknown'), ('other', 'u1', 'free', 'eu')]


def _batch(events):
  """An events batch, as the stages pass them."""
  return events_table(events, NOT_PROCESSED, with_source=True)


def _tiers(batches):
  return batches | beam.FlatMap(lambda table: [
      (r['tenant_id'], r['user_id'], r['user_tier'], r['user_region'])
      for r in table.to_pylist()])


def _counter(result, name):
  found = result.metrics().query(MetricsFilter().with_name(name))['counters']
  return sum(c.committed for c in found)


def test_newest_profile_wins():
  newest = newest_profiles(json.dumps(p) for p in PROFILES)
  assert newest[('acme', 'u1')] == Profile('pro', 'us', '2024-02-01T00:00:00Z')
  assert len(newest) == 3


def test_a_profiles_file_is_read_plain_or_compressed_and_a_bad_line_named(
    tmp_path):
  plain = _profiles_file(tmp_path)
  packed = tmp_path / 'profiles.jsonl.gz'
  packed.write_bytes(gzip.compress(open(plain, 'rb').read() + b'\n'))
  expected = newest_profiles(json.dumps(p) for p in PROFILES)
  assert read_newest_profiles(plain) == expected
  assert read_newest_profiles(str(packed)) == expected  # a blank line skipped
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(json.dumps(PROFILES[0]) + '\n{"tenant_id": "acme"}\n')
  with pytest.raises(ProfileError, match=r'bad\.jsonl line 2: .*user_id'):
    read_newest_profiles(str(bad))


def test_side_input_enrichment_with_fallback_counted(tmp_path):
  path = _profiles_file(tmp_path)
  p = TestPipeline(options=options())
  events = p | beam.Create([_batch(_events())])
  enriched = (events | EnrichFromSideInput(p | ReadProfiles(path))).events
  assert_that(_tiers(enriched), equal_to(EXPECTED))
  result = p.run()
  result.wait_until_finish()
  assert _counter(result, 'enrichment_fallbacks') == 1


def test_lookup_enrichment_equals_side_input(tmp_path):
  path = _profiles_file(tmp_path)
  p = TestPipeline(options=options())
  enriched = p | beam.Create([_batch(_events())]) | EnrichWithLookups(
      DuckDBProfileStore(path), LookupSettings(retry=FAST_RETRY))
  assert_that(_tiers(enriched.events), equal_to(EXPECTED))
  result = p.run()
  result.wait_until_finish()
  assert _counter(result, 'enrichment_fallbacks') == 1
  assert _counter(result, 'store_calls') == 4


class CountingStore(object):
  """A store over a dict that counts calls and can be made to fail."""

  def __init__(self, profiles=None):
    self.profiles = profiles or {('acme', 'u1'): Profile('pro', 'us', 'x')}
    self.calls = 0
    self.failing = False

  def open(self):
    pass

  def close(self):
    pass

  def lookup(self, tenant_id, user_id, timeout_s):
    self.calls += 1
    if self.failing:
      raise TransientError('store down')
    return self.profiles.get((tenant_id, user_id))

  def __call__(self):
    return self


def _handler(store, **settings):
  settings.setdefault('retry', FAST_RETRY)
  handler = ProfileLookupHandler(store, LookupSettings(**settings))
  handler.__enter__()
  return handler


def _ask(handler, user='u1'):
  """The handler asked for one user (a batch of two of their events: one
  lookup); returns (profile, error, counter increments)."""
  event = decode_and_validate(RawRecord(as_json(envelope(payload__user_id=user))))[0]
  _, (found, errors, delta) = handler(_batch([event, event]))
  key = (event.tenant_id, user)
  return found[key], errors.get(key), delta


def test_redis_misses_then_hits_store_called_once_per_key(redis_server):
  store = CountingStore()
  first = _handler(store, redis_url=redis_server.url)
  assert _ask(first)[0].tier == 'pro' and _ask(first, 'u9')[0] is None
  assert _ask(first)[2] == {'cache_hits': 1}
  # A second worker: its in-process cache is cold, Redis answers.
  second = _handler(store, redis_url=redis_server.url)
  profile, _, delta = _ask(second)
  assert profile.tier == 'pro' and delta['redis_hits'] == 1
  assert _ask(second, 'u9')[0] is None
  assert store.calls == 2


def test_redis_ttl_expiry_goes_back_to_the_store(redis_server):
  store = CountingStore()
  _ask(_handler(store, redis_url=redis_server.url, redis_ttl_s=1))
  time.sleep(1.2)
  _ask(_handler(store, redis_url=redis_server.url, redis_ttl_s=1))
  assert store.calls == 2


def test_in_process_cache_ttl_expiry():
  store = CountingStore()
  handler = _handler(store, cache_ttl_s=0.2)
  # A batch with two events of one user: one lookup, not one per event.
  assert _ask(handler)[2] == {'cache_misses': 1, 'store_calls': 1}
  _ask(handler)
  assert store.calls == 1
  time.sleep(0.25)
  _ask(handler)
  assert store.calls == 2


def test_redis_stopped_mid_run_then_started_again(redis_server):
  store = CountingStore()
  handler = _handler(store, redis_url=redis_server.url, cache_size=1)
  assert _ask(handler)[0].tier == 'pro'
  redis_server.stop()
  # Redis down: every answer still right, from the store; no exception.
  for user in ['u2', 'u1', 'u3', 'u1']:
    profile, error, _ = _ask(handler, user)
    assert error is None
    assert (profile.tier if profile else None) == ('pro' if user == 'u1' else None)
  assert handler._redis.errors >= 1
  redis_server.start()
  handler._redis._down_until = 0  # skip the 5 s bypass window
  _ask(handler, 'u2')  # evicts u1 from the one-entry in-process cache
  assert _ask(handler, 'u1')[2]['store_calls'] == 1  # and writes it to Redis
  fresh = _handler(CountingStore(), redis_url=redis_server.url)
  assert _ask(fresh)[2].get('redis_hits') == 1


def test_store_failing_falls_back_opens_breaker_and_closes_again():
  store = CountingStore()
  handler = _handler(store, breaker_threshold=2, breaker_reset_s=0.3)
  store.failing = True
  answers = [_ask(handler, 'u%d' % i) for i in range(2, 6)]
  assert all(p is None and e for p, e, _ in answers)
  assert sum(d.get('breaker_openings', 0) for _, _, d in answers) == 1
  calls_when_open = store.calls
  _ask(handler, 'u7')
  assert store.calls == calls_when_open, 'no store call while the breaker is open'
  store.failing = False
  time.sleep(0.35)
  profile, error, _ = _ask(handler, 'u1')
  assert profile.tier == 'pro' and error is None
  assert handler._breaker.state == 'closed'


def test_no_fallback_makes_enrichment_failed_dead_letters(tmp_path):
  store = CountingStore()
  store.failing = True
  p = TestPipeline(options=options())
  out = p | beam.Create([_batch(_events())]) | EnrichWithLookups(
      store, LookupSettings(retry=FAST_RETRY, fallback=False))
  assert_that(out.events, equal_to([]), label='no_events')  # none left
  assert_that(out[ENRICHMENT_FAILED_TAG] | beam.Map(lambda d: (
      d.error_kind, d.tenant_id, d.raw[:1])), equal_to(
          [('enrichment_failed', t, b'{') for t, _, _, _ in EXPECTED]),
      label='dead_letters')
  p.run().wait_until_finish()


def test_lookup_pipeline_with_redis_down_gives_the_same_rows(tmp_path):
  path = _profiles_file(tmp_path)
  p = TestPipeline(options=options())
  enriched = p | beam.Create([_batch(_events())]) | EnrichWithLookups(
      DuckDBProfileStore(path), LookupSettings(
          retry=FAST_RETRY, redis_url='redis://127.0.0.1:1/0'))
  assert_that(_tiers(enriched.events), equal_to(EXPECTED))
  result = p.run()
  result.wait_until_finish()
  assert _counter(result, 'redis_errors') >= 1
