"""Dedup on batches: a stateful DoFn per shard of the key space.

Batches of events are split by the shard of each idempotency key
(`--state_shards`, by default 8 per worker) and each shard keeps the keys it
has seen in one state value, so a runner holds a few keys of state, not one
per idempotency key, and touches each once per batch, not once per event.
Still exact: a key is only ever compared with the keys of its own shard.

* Bounded input (`DedupBatches`): the watermark passes the end of time once
  all input is read, so every key's expiry passes at once; the state is a
  `KeySet` cleared by one timer at its latest expiry.
* A stream (`DedupBatches(..., streaming=True)`, on every runner): each
  key expires by itself as the watermark passes its copy's event time (or
  arrival, if later) + TTL, rounded up to `expiry_step_us`, so a shard holds
  only the keys of the last TTL (`ExpiringKeys`: sorted numpy arrays, cheap
  to encode, as runners encode a shard at every batch and firing).

Why shards and not one state cell per key (Beam's `DeduplicatePerKey`
pattern, which this project ran per record until issue 21): every state
access goes through the SDK harness's state cache, which measures the value
with objsize, about 1 ms a call here whatever the size
(`docs/benchmarks.md`, cluster cost); per key that is 1 ms per event on
Dataflow and Flink workers, per shard it is 1 ms per batch and shard.

The state objects are `CacheAware`, so the state cache does not walk every
key on each write.
"""
import re
from typing import Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import PickleCoder
from apache_beam.runners.worker.statecache import CacheAware
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import GlobalWindow
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms import counters
from transforms.event_batches import first_copies, table_shards
from transforms.tallies import TALLIES, Tally

__all__ = ['DedupBatches', 'KeySet', 'ExpiringKeys', 'compact_key',
           'encode_key', 'expiry_step_us', 'SHARDS']

SHARDS = 16  # the default when a caller names none
_END_OF_GLOBAL_WINDOW = GlobalWindow().max_timestamp()

_CONTRACT_KEY = re.compile('[0-9a-f]{64}')


def compact_key(key: str):
  """How a dedup shard keeps a key: a contract key (64 lowercase hex digits,
  contract section 1) as the int it spells, any other string as itself.
  Exact: distinct strings of the form give distinct ints, and an int never
  equals a str. Measured: a set of 1M keys takes 93 MB as ints, 155 MB as
  strings, and on bounded input a shard keeps every key to the end."""
  return int(key, 16) if _CONTRACT_KEY.fullmatch(key) else key


class KeySet(CacheAware):
  """The keys one dedup shard has seen, and the latest expiry (micros) among
  them: the time of the shard's one timer. Measured by the runner's state
  cache as a few bytes instead of walking every key on each write."""

  def __init__(self, keys=None, latest=None):
    self.keys = keys if keys is not None else set()
    self.latest = latest

  def keep_until(self, expires):
    """Makes the latest expiry `expires` if that is later."""
    if self.latest is None or expires > self.latest:
      self.latest = expires

  def get_referents_for_cache(self):
    return []

  def __reduce__(self):
    return KeySet, (self.keys, self.latest)


class _DedupBatchFn(beam.DoFn):
  """One shard of the key space: drops keys seen within the TTL (event time).

  Bounded input only: there the watermark passes the end
  of time once all input is read, so every key's expiry (event time + TTL)
  passes at the same moment, and no key expires earlier. One timer per shard
  at the latest expiry therefore clears the shard in one firing, with the
  same result as a timer per expiry time; those were seen to fire 257 times
  at the end of a 1,000,000-event run, each reading and rewriting a shard's
  whole key set (8 s, and a third more memory). Keys are kept without their
  expiry. (Streaming: `_ExpiringDedupBatchFn`.)
  """

  SEEN = ReadModifyWriteStateSpec('seen', PickleCoder())
  EXPIRY = TimerSpec('expiry', TimeDomain.WATERMARK)

  def __init__(self, ttl_s):
    self._ttl_us = ttl_s * 1000000

  def setup(self):
    self._tally = Tally()

  def finish_bundle(self):
    yield from self._tally.emit()

  def process(self, element, seen=beam.DoFn.StateParam(SEEN),
              expiry=beam.DoFn.TimerParam(EXPIRY)):
    _, table = element
    keys = seen.read() or KeySet()
    unique, duplicates, latest = first_copies(table, keys.keys, compact_key)
    if latest is not None:
      keys.keep_until(latest + self._ttl_us)
    seen.write(keys)
    if keys.latest is not None:
      expiry.set(Timestamp(micros=keys.latest))
    self._tally.inc(counters.DUPLICATES, duplicates)
    if len(unique):
      yield unique

  @on_timer(EXPIRY)
  def expire(self, seen=beam.DoFn.StateParam(SEEN)):
    # Fired at the latest expiry of the shard's keys: all have expired.
    seen.clear()


def expiry_step_us(ttl_s: int) -> int:
  """How finely a streaming shard times its keys' expiries: a 96th of the
  TTL (15 minutes for the default day), at least a second. A shard's timer
  fires once per step the watermark crosses, and each firing reads and
  rewrites the shard's keys: per record it would be once per distinct event
  time. So a key is remembered for its TTL and at most one step more."""
  return max(1000000, ttl_s * 1000000 // 96)


def encode_key(key: str) -> bytes:
  """A key as the bytes a streaming shard holds, distinct exactly when the
  keys are: a contract key (64 lowercase hex digits) as 0x01 and its 32
  bytes, any other string as 0x02 and its UTF-8; both end in 0xff, which
  UTF-8 never holds, so none ends in a NUL (numpy's fixed-width bytes
  ignore trailing NULs)."""
  if _CONTRACT_KEY.fullmatch(key):
    return b'\x01' + bytes.fromhex(key) + b'\xff'
  return b'\x02' + key.encode('utf-8', 'surrogatepass') + b'\xff'


def _widened(array, width):
  return array if array.dtype.itemsize >= width else array.astype('S%d' % width)


class ExpiringKeys(CacheAware):
  """The keys one streaming dedup shard holds, each with the time (micros)
  after which it is forgotten: two numpy arrays, the encoded keys
  (`encode_key`) sorted and their expiries beside them.

  Why arrays, not a Python dict: the local runner keeps state encoded and
  decodes it at every read, and the shard is read at every batch and every
  expiry firing. A day of keys (~280,000 in the stream soak) took ~100 ms
  to unpickle and pickle as a dict of ints, ~14 ms as two arrays, which
  also take 42 bytes a key instead of ~130. A batch is one binary search
  of its keys; expiring is one mask. (numpy comes with Beam.)"""

  def __init__(self, keys=None, expiries=None):
    self.keys = keys if keys is not None else np.array([], dtype='S1')
    self.expiries = (expiries if expiries is not None
                     else np.array([], dtype=np.int64))

  @property
  def earliest(self):
    """When the shard's timer fires next: the earliest expiry, or None."""
    return int(self.expiries.min()) if len(self.expiries) else None

  def __len__(self):
    return len(self.keys)

  def _find(self, encoded):
    """(encoded at the shard's width, where each would go, whether held)."""
    width = max(self.keys.dtype.itemsize, encoded.dtype.itemsize)
    self.keys, encoded = _widened(self.keys, width), _widened(encoded, width)
    at = np.searchsorted(self.keys, encoded)
    held = at < len(self.keys)
    held[held] = self.keys[at[held]] == encoded[held]
    return encoded, at, held

  def first_copies(self, keys, expiries):
    """Positions, in order, of the `keys` (strings) that are neither held
    nor repeated earlier in `keys`; holds those with their `expiries`."""
    if not keys:
      return []
    unique, first = np.unique(np.array([encode_key(k) for k in keys]),
                              return_index=True)
    unique, at, held = self._find(unique)
    new = ~held
    # `unique` is sorted, so inserting before `at` keeps the keys sorted.
    self.keys = np.insert(self.keys, at[new], unique[new])
    self.expiries = np.insert(self.expiries, at[new],
                              np.asarray(expiries, dtype=np.int64)[first[new]])
    return np.sort(first[new]).tolist()

  def __contains__(self, key):
    return bool(self._find(np.array([encode_key(key)]))[2][0])

  def expiry_of(self, key):
    """The expiry (micros) of a held key, or None."""
    _, at, held = self._find(np.array([encode_key(key)]))
    return int(self.expiries[at[0]]) if held[0] else None

  def expire(self, now):
    """Forgets the keys whose time is at or before `now`; returns how many."""
    kept = self.expiries > now
    forgotten = len(kept) - int(kept.sum())
    if forgotten:
      self.keys, self.expiries = self.keys[kept], self.expiries[kept]
    return forgotten

  def get_referents_for_cache(self):
    return []

  def __reduce__(self):
    return ExpiringKeys, (self.keys, self.expiries)


class _ExpiringDedupBatchFn(beam.DoFn):
  """Streaming: one shard of the key space; a key is forgotten once the
  watermark passes the later of its first copy's event time and arrival, +
  TTL (at most one `expiry_step_us` later), by one timer per shard at its
  earliest expiry.

  A copy arriving after that counts as new; the `events` table's primary
  key still keeps one row (the sink counts it as already stored)."""

  SEEN = ReadModifyWriteStateSpec('seen', PickleCoder())
  EXPIRY = TimerSpec('expiry', TimeDomain.WATERMARK)

  def __init__(self, ttl_s):
    self._ttl_us = ttl_s * 1000000
    self._step_us = expiry_step_us(ttl_s)

  def setup(self):
    self._tally = Tally()

  def finish_bundle(self):
    yield from self._tally.emit()

  def process(self, element, timestamp=beam.DoFn.TimestampParam,
              seen=beam.DoFn.StateParam(SEEN),
              expiry=beam.DoFn.TimerParam(EXPIRY)):
    _, table = element
    keys = seen.read() or ExpiringKeys()
    step, ttl = self._step_us, self._ttl_us
    # The TTL runs from the later of a key's event time and its arrival (the
    # batch's timestamp at the source, which the watermark follows), so an
    # event older than the TTL arriving through the stream (a backfill, a
    # producer offline for a day) is still remembered for the TTL.
    arrived = timestamp.micros if timestamp < _END_OF_GLOBAL_WINDOW else \
        -2 ** 62  # a batch emitted at the window's end has no arrival time
    times = pc.cast(table.column('event_time'), pa.int64()).to_pylist()
    kept = keys.first_copies(
        table.column('idempotency_key').to_pylist(),
        # each rounded up to a step
        [-(-(max(t, arrived) + ttl) // step) * step for t in times])
    seen.write(keys)
    if keys.earliest is not None:
      expiry.set(Timestamp(micros=keys.earliest))
    self._tally.inc(counters.DUPLICATES, table.num_rows - len(kept))
    if kept:
      yield table if len(kept) == table.num_rows else table.take(kept)

  @on_timer(EXPIRY)
  def expire(self, fired=beam.DoFn.TimestampParam,
             seen=beam.DoFn.StateParam(SEEN),
             expiry=beam.DoFn.TimerParam(EXPIRY)):
    # The watermark is at or past `fired`: every key timed at or before it
    # has expired.
    keys = seen.read()
    if keys is None:
      return
    keys.expire(fired.micros)
    if len(keys):
      seen.write(keys)
      expiry.set(Timestamp(micros=keys.earliest))
    else:
      seen.clear()


class DedupBatches(beam.PTransform):
  """Events batches (Arrow tables) in; batches of first copies out (exact,
  keyed by key): `result.events`, and the step's counts on
  `result.tallies`.

  Args:
    ttl_s: seconds of event time a key is remembered (`--dedup_ttl`).
    streaming: keys expire one by one as the watermark moves; else all at
      the end of the bounded input.
    shards: keys the state is spread over (`--state_shards`).
  """

  def __init__(self, ttl_s=86400, streaming=False, shards=SHARDS):
    super().__init__()
    if ttl_s < 0:
      raise ValueError('ttl_s must be >= 0, got %r' % ttl_s)
    if shards < 1:
      raise ValueError('shards must be >= 1, got %r' % shards)
    self._ttl_s, self._shards = ttl_s, shards
    self._streaming = streaming

  def expand(self, batches):
    dedup = _ExpiringDedupBatchFn if self._streaming else _DedupBatchFn
    shards = self._shards
    return (batches
            | 'SplitByShard' >> beam.FlatMap(
                table_shards, shards).with_output_types(Tuple[int, pa.Table])
            | 'DropRetries' >> beam.ParDo(
                dedup(self._ttl_s)).with_output_types(pa.Table).with_outputs(
                    TALLIES, main='events'))


