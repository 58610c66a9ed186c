"""Reliability parts for remote lookups: an LRU+TTL cache (cachetools), retries
with exponential backoff (tenacity) and a circuit breaker. Injectable clocks
and sleeps, so each is tested alone.

The breaker is this project's own (30 lines): pybreaker is not on the package
mirror this project builds from, and `circuitbreaker` wraps functions as a
decorator with no clock to inject and no trial-call state to read.
"""
import time
from typing import Callable, NamedTuple

import cachetools
import tenacity

__all__ = ['LruTtlCache', 'CircuitBreaker', 'RetryPolicy', 'call_with_retries',
           'TransientError', 'MISSING']

MISSING = object()


class TransientError(Exception):
  """A failure worth retrying (timeout, connection refused, 5xx, 429)."""


class LruTtlCache(cachetools.TTLCache):
  """cachetools' TTL cache (least recently used entries go first, entries
  expire) with the hit, miss and eviction counts the lookup step reports.

  Values may be None (a cached "no profile"); `get` returns MISSING on a miss.
  """

  def __init__(self, max_size: int, ttl_s: float, clock=time.monotonic):
    if max_size < 1 or ttl_s <= 0:
      raise ValueError('max_size must be >= 1 and ttl_s > 0')
    super().__init__(max_size, ttl_s, timer=clock)
    self.hits = self.misses = self.evictions = 0

  def get(self, key, default=MISSING):
    value = super().get(key, MISSING)
    if value is MISSING:
      self.misses += 1
      return default
    self.hits += 1
    return value

  def put(self, key, value):
    self[key] = value

  def popitem(self):
    """Called by cachetools only to make room: an eviction."""
    self.evictions += 1
    return super().popitem()


class CircuitBreaker(object):
  """Opens after `threshold` failures in a row; lets one trial call through after
  `reset_s`; closes again when a call succeeds."""

  CLOSED, OPEN, HALF_OPEN = 'closed', 'open', 'half_open'

  def __init__(self, threshold: int = 5, reset_s: float = 30.0,
               clock=time.monotonic):
    self._threshold, self._reset_s, self._clock = threshold, reset_s, clock
    self._failures = 0
    self._opened_at = None
    self.openings = 0

  @property
  def state(self):
    if self._opened_at is None:
      return self.CLOSED
    if self._clock() - self._opened_at >= self._reset_s:
      return self.HALF_OPEN
    return self.OPEN

  def allow(self) -> bool:
    """May a call go to the source now?"""
    return self.state != self.OPEN

  def record_success(self):
    self._failures = 0
    self._opened_at = None

  def record_failure(self):
    self._failures += 1
    if self.state == self.HALF_OPEN or self._failures >= self._threshold:
      if self._opened_at is None or self.state == self.HALF_OPEN:
        self.openings += 1
      self._opened_at = self._clock()


class RetryPolicy(NamedTuple):
  """Retries of transient errors: delays initial, initial*multiplier, ... <= max."""
  max_retries: int = 3
  initial_s: float = 1.0
  max_s: float = 30.0
  multiplier: float = 2.0

  def delays(self):
    delay = self.initial_s
    for _ in range(self.max_retries):
      yield min(delay, self.max_s)
      delay *= self.multiplier


def call_with_retries(fn: Callable, policy: RetryPolicy, sleep=time.sleep):
  """Calls fn(); retries TransientError per the policy (tenacity), then
  re-raises it. Any other error goes through at once."""
  retrying = tenacity.Retrying(
      retry=tenacity.retry_if_exception_type(TransientError),
      stop=tenacity.stop_after_attempt(policy.max_retries + 1),
      wait=tenacity.wait_exponential(multiplier=policy.initial_s,
                                     exp_base=policy.multiplier,
                                     max=policy.max_s),
      sleep=sleep, reraise=True)
  return retrying(fn)
