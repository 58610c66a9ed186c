"""Small reliability parts for remote lookups: an LRU+TTL cache, a circuit breaker
and retries with exponential backoff. Pure Python with injectable clocks, so each
is tested alone."""
import collections
import time
from typing import Callable, NamedTuple

__all__ = ['LruTtlCache', 'CircuitBreaker', 'RetryPolicy', 'call_with_retries',
           'TransientError', 'MISSING']

MISSING = object()


class TransientError(Exception):
  """A failure worth retrying (timeout, connection refused, 5xx, 429)."""


class LruTtlCache(object):
  """An in-process cache: least recently used entries go first, entries expire.

  Values may be None (a cached "no profile"); `get` returns MISSING on a miss.
  """

  def __init__(self, max_size: int, ttl_s: float, clock=time.monotonic):
    if max_size < 1 or ttl_s <= 0:
      raise ValueError('max_size must be >= 1 and ttl_s > 0')
    self._max_size, self._ttl, self._clock = max_size, ttl_s, clock
    self._entries = collections.OrderedDict()
    self.hits = self.misses = self.evictions = 0

  def get(self, key):
    entry = self._entries.get(key, MISSING)
    if entry is not MISSING:
      expires, value = entry
      if expires > self._clock():
        self._entries.move_to_end(key)
        self.hits += 1
        return value
      del self._entries[key]
    self.misses += 1
    return MISSING

  def put(self, key, value):
    self._entries[key] = (self._clock() + self._ttl, value)
    self._entries.move_to_end(key)
    while len(self._entries) > self._max_size:
      self._entries.popitem(last=False)
      self.evictions += 1

  def __len__(self):
    return len(self._entries)


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
  """Calls fn(); retries TransientError per the policy, then re-raises it."""
  delays = policy.delays()
  while True:
    try:
      return fn()
    except TransientError:
      delay = next(delays, None)
      if delay is None:
        raise
      sleep(delay)
