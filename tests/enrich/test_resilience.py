"""The LRU+TTL cache, the circuit breaker and the retry policy, alone."""
import pytest

from transforms.enrich.resilience import (MISSING, CircuitBreaker, LruTtlCache,
                                   RetryPolicy, TransientError, call_with_retries)


class Clock(object):
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_cache_hits_misses_and_ttl_expiry():
  clock = Clock()
  cache = LruTtlCache(10, ttl_s=5, clock=clock)
  assert cache.get('a') is MISSING
  cache.put('a', None)  # a cached "no profile"
  assert cache.get('a') is None
  clock.now = 4.9
  assert cache.get('a') is None
  clock.now = 5.0
  assert cache.get('a') is MISSING
  assert (cache.hits, cache.misses) == (2, 2)


def test_cache_evicts_least_recently_used():
  cache = LruTtlCache(2, ttl_s=60, clock=Clock())
  cache.put('a', 1)
  cache.put('b', 2)
  cache.get('a')
  cache.put('c', 3)
  assert cache.get('b') is MISSING and cache.get('a') == 1 and cache.get('c') == 3
  assert cache.evictions == 1 and len(cache) == 2


def test_breaker_opens_after_threshold_then_half_opens_and_closes():
  clock = Clock()
  breaker = CircuitBreaker(threshold=3, reset_s=10, clock=clock)
  for _ in range(2):
    breaker.record_failure()
  assert breaker.allow()
  breaker.record_failure()
  assert breaker.state == 'open' and not breaker.allow() and breaker.openings == 1
  clock.now = 10
  assert breaker.state == 'half_open' and breaker.allow()
  breaker.record_failure()  # the trial call failed: open again
  assert breaker.state == 'open' and breaker.openings == 2
  clock.now = 20
  breaker.record_success()
  assert breaker.state == 'closed'


def test_retry_delays_exponential_and_capped():
  assert list(RetryPolicy(3, 1, 30, 2).delays()) == [1, 2, 4]
  assert list(RetryPolicy(5, 10, 30, 2).delays()) == [10, 20, 30, 30, 30]


def test_call_with_retries_retries_transient_then_succeeds():
  calls, slept = [], []

  def flaky():
    calls.append(1)
    if len(calls) < 3:
      raise TransientError('timeout')
    return 'ok'
  assert call_with_retries(flaky, RetryPolicy(3, 1, 30, 2), slept.append) == 'ok'
  assert slept == [1, 2]


def test_call_with_retries_gives_up_after_max_and_passes_other_errors():
  slept = []

  def down():
    raise TransientError('refused')
  with pytest.raises(TransientError):
    call_with_retries(down, RetryPolicy(3, 1, 30, 2), slept.append)
  assert slept == [1, 2, 4]

  def bug():
    raise KeyError('x')
  with pytest.raises(KeyError):
    call_with_retries(bug, RetryPolicy(3, 1, 30, 2), slept.append)
