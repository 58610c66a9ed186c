"""Enrichment by cached remote lookups (`--enrichment lookup`).

For profile stores too large for a side input. The lookups go through Beam's
`Enrichment` transform with the project's `ProfileLookupHandler`, which puts in
front of the store:

1. an in-process LRU cache with a TTL (per worker process);
2. optionally a shared Redis cache (`--redis_url`). Unlike Beam's own
   `with_redis_cache`, a Redis failure never fails the pipeline: the handler
   bypasses Redis for a few seconds and goes to the store, then tries again;
3. the store itself, each call with a timeout, transient failures retried with
   exponential backoff, behind a circuit breaker. While the breaker is open,
   events flow on with the fallback values (counted); it closes when a trial call
   succeeds. With `--enrichment_fallback none` a failed lookup is an
   `enrichment_failed` dead letter instead.

Each request is an events batch (an Arrow table), whose distinct users are
looked up once each. The handler runs inside Beam's request thread, where
Beam metrics cannot be incremented, so each answer carries its counter
increments and the step after `Enrichment` counts them.
"""
import collections
import json
import logging
import time
from typing import NamedTuple, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.enrichment import Enrichment, EnrichmentSourceHandler

from schemas.records import DeadLetter, ENRICHMENT_FAILED
from transforms import counters
from transforms.event_batches import enrich_table
from transforms.enrich.profiles import Profile
from transforms.tallies import TALLIES, Tally
from transforms.enrich.resilience import (MISSING, CircuitBreaker, LruTtlCache,
                                   RetryPolicy, TransientError,
                                   call_with_retries)

__all__ = ['LookupSettings', 'ProfileLookupHandler', 'SafeRedisCache',
           'EnrichWithLookups', 'ENRICHMENT_FAILED_TAG', 'LOOKUP_COUNTERS']

_LOGGER = logging.getLogger(__name__)
ENRICHMENT_FAILED_TAG = 'enrichment_failed'
LOOKUP_COUNTERS = ('cache_hits', 'cache_misses', 'cache_evictions',
                   'redis_hits', 'redis_errors', 'store_calls', 'store_failures',
                   'breaker_openings', counters.ENRICHMENT_FALLBACKS)


class LookupSettings(NamedTuple):
  """Every knob of the lookup path (all from options)."""
  cache_size: int = 100000
  cache_ttl_s: float = 300.0
  redis_url: Optional[str] = None
  redis_ttl_s: int = 3600
  lookup_timeout_s: float = 2.0
  retry: RetryPolicy = RetryPolicy()
  breaker_threshold: int = 5
  breaker_reset_s: float = 30.0
  fallback: bool = True
  batch_size: int = 5000  # events per batch at most (`--read_batch_size`)

  def call_budget_s(self) -> float:
    """The longest one lookup may take (timeouts plus backoff)."""
    return ((self.retry.max_retries + 1) * self.lookup_timeout_s
            + sum(self.retry.delays()) + 5.0)

  def batch_budget_s(self) -> float:
    """The longest one handler call (a batch) may take: its failed lookups
    until the breaker opens, and a timeout for every other user."""
    return (self.breaker_threshold * self.call_budget_s()
            + self.batch_size * self.lookup_timeout_s)


class SafeRedisCache(object):
  """A Redis cache that never raises: on an error it is bypassed for a while."""

  def __init__(self, url, ttl_s, retry_after_s=5.0, clock=time.monotonic):
    import redis  # imported here: only the lookup path needs it
    self._errors = (redis.exceptions.RedisError, OSError)
    self._client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5)
    self._ttl_s, self._retry_after_s, self._clock = ttl_s, retry_after_s, clock
    self._down_until = 0.0
    self.errors = 0

  @staticmethod
  def key(tenant_id, user_id):
    return 'profile:%s:%s' % (tenant_id, user_id)

  def _usable(self):
    return self._clock() >= self._down_until

  def _failed(self, error):
    self.errors += 1
    self._down_until = self._clock() + self._retry_after_s
    _LOGGER.warning('Redis cache bypassed for %.0f s: %s', self._retry_after_s, error)

  def get(self, tenant_id, user_id):
    if not self._usable():
      return MISSING
    try:
      data = self._client.get(self.key(tenant_id, user_id))
    except self._errors as e:
      self._failed(e)
      return MISSING
    if data is None:
      return MISSING
    value = json.loads(data)
    return None if value is None else Profile(*value)

  def put(self, tenant_id, user_id, profile):
    if not self._usable():
      return
    try:
      self._client.set(self.key(tenant_id, user_id),
                       json.dumps(None if profile is None else list(profile)),
                       ex=self._ttl_s)
    except self._errors as e:
      self._failed(e)

  def close(self):
    self._client.close()


class ProfileLookupHandler(EnrichmentSourceHandler):
  """An events batch in; (batch, (profile or None per (tenant, user), error
  per (tenant, user) whose lookup failed, counter increments)) out. Each
  distinct user of a batch is looked up once.

  Args:
    store_factory: a picklable callable returning a store with `open()`,
      `lookup(tenant_id, user_id, timeout_s) -> Profile or None` (raising
      `TransientError` on a failure worth retrying) and `close()`.
    settings: `LookupSettings`.
  """
  use_custom_types = True

  def __init__(self, store_factory, settings: LookupSettings):
    self._store_factory = store_factory
    self._settings = settings

  def __enter__(self):
    s = self._settings
    self._store = self._store_factory()
    self._store.open()
    self._cache = LruTtlCache(s.cache_size, s.cache_ttl_s)
    self._redis = SafeRedisCache(s.redis_url, s.redis_ttl_s) if s.redis_url else None
    self._breaker = CircuitBreaker(s.breaker_threshold, s.breaker_reset_s)
    self._store_calls = self._store_failures = self._redis_hits = 0

  def __exit__(self, *exc):
    self._store.close()
    if self._redis is not None:
      self._redis.close()

  def get_cache_key(self, request):
    return ''  # Beam's cache is not used; see the module docstring

  def __call__(self, table, *args, **kwargs):
    """An events batch: each distinct (tenant, user) looked up once."""
    before = self._snapshot()
    found, errors = {}, {}
    for key in set(zip(table.column('tenant_id').to_pylist(),
                       table.column('user_id').to_pylist())):
      found[key], error = self._lookup(*key)
      if error is not None:
        errors[key] = error
    delta = {k: v - before[k] for k, v in self._snapshot().items()
             if v != before[k]}
    return table, (found, errors, delta)

  def _snapshot(self):
    redis_errors = self._redis.errors if self._redis else 0
    return collections.Counter(
        cache_hits=self._cache.hits, cache_misses=self._cache.misses,
        cache_evictions=self._cache.evictions, redis_errors=redis_errors,
        breaker_openings=self._breaker.openings,
        store_calls=self._store_calls, store_failures=self._store_failures,
        redis_hits=self._redis_hits)

  def _lookup(self, tenant_id, user_id):
    key = (tenant_id, user_id)
    cached = self._cache.get(key)
    if cached is not MISSING:
      return cached, None
    if self._redis is not None:
      shared = self._redis.get(tenant_id, user_id)
      if shared is not MISSING:
        self._redis_hits += 1
        self._cache.put(key, shared)
        return shared, None
    if not self._breaker.allow():
      return None, 'profile store circuit breaker is open'
    try:
      profile = call_with_retries(self._call_store(tenant_id, user_id),
                                  self._settings.retry)
    except TransientError as e:
      self._store_failures += 1
      self._breaker.record_failure()
      return None, 'profile lookup failed after %d retries: %s' % (
          self._settings.retry.max_retries, e)
    self._breaker.record_success()
    self._cache.put(key, profile)
    if self._redis is not None:
      self._redis.put(tenant_id, user_id, profile)
    return profile, None

  def _call_store(self, tenant_id, user_id):
    def call():
      self._store_calls += 1
      return self._store.lookup(tenant_id, user_id, self._settings.lookup_timeout_s)
    return call


class _CountAndRouteFn(beam.DoFn):
  """Counts the handler's increments and joins its profiles; with no
  fallback, routes the rows whose lookup failed to dead letters."""

  def __init__(self, fallback):
    self._fallback = fallback

  def setup(self):
    self._tally = Tally()

  def finish_bundle(self):
    yield from self._tally.emit()

  def process(self, joined):
    table, (found, errors, delta) = joined
    for name, value in delta.items():
      self._tally.inc(name, value)
    if errors and not self._fallback:
      table = yield from self._route_failed(table, errors)
    table, fallbacks = enrich_table(table, found)
    self._tally.inc(counters.ENRICHMENT_FALLBACKS, fallbacks)
    if table.num_rows:
      yield table

  def _route_failed(self, table, errors):
    """Yields a letter per row whose lookup failed; returns the others."""
    keys = list(zip(table.column('tenant_id').to_pylist(),
                    table.column('user_id').to_pylist()))
    failed = [key in errors for key in keys]
    raws, origins = table.column('raw'), table.column('origin')
    ids = table.column('idempotency_key')
    for i, key in enumerate(keys):
      if failed[i]:
        yield beam.pvalue.TaggedOutput(ENRICHMENT_FAILED_TAG, DeadLetter.of(
            ENRICHMENT_FAILED, errors[key], raws[i].as_py(),
            origins[i].as_py(), idempotency_key=ids[i].as_py(),
            tenant_id=key[0]))
    return table.filter(pa.array([not f for f in failed], pa.bool_()))


class EnrichWithLookups(beam.PTransform):
  """Events batches (Arrow tables) in; enriched batches (main) and
  `enrichment_failed` letters out.

  Args:
    store_factory: see `ProfileLookupHandler`.
    settings: `LookupSettings`.
  """

  def __init__(self, store_factory, settings: LookupSettings):
    super().__init__()
    self._handler = ProfileLookupHandler(store_factory, settings)
    self._settings = settings

  def expand(self, events):
    return (
        events
        | 'Lookup' >> Enrichment(
            self._handler, join_fn=lambda table, answer: (table, answer),
            timeout=self._settings.batch_budget_s(), throttler=None)
        | 'CountAndRoute' >> beam.ParDo(
            _CountAndRouteFn(self._settings.fallback)).with_output_types(
                pa.Table).with_outputs(ENRICHMENT_FAILED_TAG, TALLIES,
                                       main='events'))
