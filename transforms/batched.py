"""The batched fast path for bounded input: batches of records as elements.

Beam's per-element overhead (and, for stateful steps, its state cache measuring
every value with `objsize`) dominates a per-record pipeline: ~500 records/s
locally. Here each element is a batch of a few thousand records, and the steps
call the same pure functions as the per-record path (`decode_and_validate`,
`apply_profile`, `accepted_windows`/`views`, `event_row`), so results are the
same (a test checks it on a corpus with every kind of bad record):

* `ReadRecordBatches`: files to lists of `RawRecord`s.
* `DecodeBatches`: lists in; lists of `Event`s out, dead letters one by one
  (`parallel_decode.DecodeTables` makes `events` Arrow tables instead).
* `DedupBatches`: a stateful DoFn keyed by shard (16 shards of the key space),
  its state the keys seen, cleared by a WATERMARK timer at the latest expiry
  (event time + TTL): still exact and keyed by `idempotency_key`. The state
  object is `CacheAware`, so the runner's cache does not walk every key on
  each write.
* `Rebatch`: joins the small per-shard batches dedup leaves into full ones.
* Dedup and `Rebatch` take Arrow tables as well (`batched_tables.py`).
* The views: `batched_views.BatchedViews`. The side-input join is
  `EnrichFromSideInput(..., batched=True)`; rows of events are one Arrow table
  per batch (`schemas.rows.events_table`).

Batches travel with `BatchCoder` (one pickle, a cheap size estimate).

Streaming keeps the per-record path, where watermarks, lateness and the late-data
gate apply per event.
"""
import gc
import re
from typing import Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import PickleCoder
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.runners.worker.statecache import CacheAware
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas.keys import key_shard
from schemas.registry import load_registry
from transforms import counters
from transforms.decode import DEAD_LETTERS
from transforms.decoding import decode_records
from transforms.batch import Batch
from transforms.batched_tables import first_copies, table_shards
from transforms.sources import read_file_records
from transforms.views import micros

__all__ = ['Batch', 'ReadRecordBatches', 'DecodeBatches', 'DedupBatches',
           'Rebatch', 'KeySet']

SHARDS = 16


class _ReadBatchesFn(beam.DoFn):

  def __init__(self, batch_size, registry_path=None):
    self._batch_size = batch_size
    self._registry_path = registry_path

  def setup(self):
    self._registry = load_registry(self._registry_path)

  def process(self, readable_file):
    batch = []
    with readable_file.open() as stream:
      for record in read_file_records(
          stream, readable_file.metadata.path, self._registry):
        batch.append(record)
        if len(batch) >= self._batch_size:
          yield Batch(batch)
          batch = []
    if batch:
      yield Batch(batch)


class ReadRecordBatches(beam.PTransform):
  """Files matching `pattern` to lists of at most `batch_size` RawRecords."""

  def __init__(self, pattern, batch_size=5000, registry_path=None,
               spread_batches=True):
    super().__init__()
    self._pattern, self._batch_size = pattern, batch_size
    self._registry_path = registry_path
    self._spread_batches = spread_batches

  def expand(self, pbegin):
    return (pbegin
            | 'MatchFiles' >> fileio.MatchFiles(self._pattern)
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'OpenFiles' >> fileio.ReadMatches()
            | 'SplitBatches' >> beam.ParDo(_ReadBatchesFn(
                self._batch_size, self._registry_path)).with_output_types(Batch)
            | 'SpreadBatches' >> self._spread())

  def _spread(self):
    # Spreads the batches of one large file over the workers. With one local
    # worker it only costs: the in-process runner would hold every raw batch
    # in memory at this boundary (measured: 2.0 -> 1.45 GB peak and 7% faster
    # on 400,000 events without it).
    if self._spread_batches:
      return beam.Reshuffle().with_output_types(Batch)
    return beam.Map(lambda batch: batch).with_output_types(Batch)


# The batched path allocates millions of short-lived containers (events,
# payload dicts, rows); with CPython's default first threshold (700) the
# cyclic collector ran so often it took about a quarter of a run (measured on
# 200,000 events: the main stage 12.3 s -> 9.3 s, and a lower peak). Raised
# once per worker process, never lowered.
GC_THRESHOLDS = (50000, 20, 20)


def raise_gc_thresholds():
  if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
    gc.set_threshold(*GC_THRESHOLDS)


class DecodeCounters(object):
  """The decode step's counters, counted per decoded batch."""

  def __init__(self):
    ns = counters.NAMESPACE
    self._input = Metrics.counter(ns, counters.INPUT_RECORDS)
    self._blank = Metrics.counter(ns, counters.BLANK_LINES)
    self._unknown = Metrics.counter(ns, counters.UNKNOWN_FIELDS)
    self._valid = Metrics.counter(ns, counters.VALID_EVENTS)

  def count(self, decoded, records: int):
    """Counts `decoded`, the result of decoding `records` raw records."""
    self._blank.inc(decoded.blank)
    self._input.inc(records - decoded.blank)
    self._valid.inc(len(decoded.events))
    self._unknown.inc(decoded.unknown_fields)


def decoded_outputs(decoded, wrap=lambda value: value):
  """A decoded batch's outputs: each dead letter on the `dead_letters` tag,
  then its events (a `Batch`, or the Arrow table) if any, each through
  `wrap`."""
  for letter in decoded.letters:
    yield beam.pvalue.TaggedOutput(DEAD_LETTERS, wrap(letter))
  events = decoded.events
  if len(events):
    yield wrap(Batch(events) if isinstance(events, list) else events)


class _DecodeBatchFn(beam.DoFn):

  def __init__(self, registry_path=None):
    self._registry_path = registry_path

  def setup(self):
    raise_gc_thresholds()
    self._registry = load_registry(self._registry_path)
    self._counters = DecodeCounters()

  def process(self, batch):
    decoded = decode_records(batch, self._registry)
    self._counters.count(decoded, len(batch))
    yield from decoded_outputs(decoded)


class DecodeBatches(beam.PTransform):
  """Lists of raw records in; lists of events (`events`) and dead letters out.

  Args:
    registry_path: the schema registry (`registry.json`) whose version gates
      and schemas apply (default: the shipped one).
  """

  def __init__(self, registry_path=None):
    super().__init__()
    self._registry_path = registry_path

  def expand(self, batches):
    return batches | 'DecodeValidate' >> beam.ParDo(
        _DecodeBatchFn(self._registry_path)).with_output_types(
            Batch).with_outputs(
            DEAD_LETTERS, main='events')


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

  Bounded input only (the batched path): there the watermark passes the end
  of time once all input is read, so every key's expiry (event time + TTL)
  passes at the same moment, and no key expires earlier. One timer per shard
  at the latest expiry therefore clears the shard in one firing, with the
  same result as a timer per expiry time; those were seen to fire 257 times
  at the end of a 1,000,000-event run, each reading and rewriting a shard's
  whole key set (8 s, and a third more memory). Keys are kept without their
  expiry. (Streaming runs dedup per record, `DedupByIdempotencyKey`, whose
  timers expire keys as the watermark moves.)
  """

  SEEN = ReadModifyWriteStateSpec('seen', PickleCoder())
  EXPIRY = TimerSpec('expiry', TimeDomain.WATERMARK)

  def __init__(self, ttl_s):
    self._ttl_us = ttl_s * 1000000

  def setup(self):
    self._duplicates = Metrics.counter(counters.NAMESPACE, counters.DUPLICATES)

  def process(self, element, seen=beam.DoFn.StateParam(SEEN),
              expiry=beam.DoFn.TimerParam(EXPIRY)):
    _, events = element
    keys = seen.read() or KeySet()
    if isinstance(events, pa.Table):
      unique, duplicates, latest = first_copies(events, keys.keys, compact_key)
    else:
      unique, duplicates, latest = _first_events(events, keys.keys)
    if latest is not None:
      keys.keep_until(latest + self._ttl_us)
    seen.write(keys)
    if keys.latest is not None:
      expiry.set(Timestamp(micros=keys.latest))
    self._duplicates.inc(duplicates)
    if len(unique):
      yield unique

  @on_timer(EXPIRY)
  def expire(self, seen=beam.DoFn.StateParam(SEEN)):
    # Fired at the latest expiry of the shard's keys: all have expired.
    seen.clear()


def _first_events(events, known):
  """`batched_tables.first_copies` for a `Batch` of `Event`s."""
  unique, duplicates, latest = [], 0, None
  for event in events:
    key = compact_key(event.idempotency_key)
    if key in known:
      duplicates += 1
      continue
    known.add(key)
    unique.append(event)
    if latest is None or event.event_time > latest:
      latest = event.event_time
  return Batch(unique), duplicates, None if latest is None else micros(latest)


def _split_by_shard(events):
  if isinstance(events, pa.Table):
    return table_shards(events, SHARDS)
  shards = {}
  for event in events:
    shards.setdefault(key_shard(event.idempotency_key, SHARDS), []).append(event)
  return [(shard, Batch(events)) for shard, events in shards.items()]


class DedupBatches(beam.PTransform):
  """Batches of events in (`Batch`es of `Event`s, or `events` Arrow tables:
  `element_type`); batches of first copies out (exact, keyed by key)."""

  def __init__(self, ttl_s=86400, element_type=Batch):
    super().__init__()
    self._ttl_s, self._type = ttl_s, element_type

  def expand(self, batches):
    return (batches
            | 'SplitByShard' >> beam.FlatMap(_split_by_shard).with_output_types(
                Tuple[int, self._type])
            | 'DropRetries' >> beam.ParDo(
                _DedupBatchFn(self._ttl_s)).with_output_types(self._type))


def _joined(parts):
  if isinstance(parts[0], pa.Table):
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts)
  return Batch([item for part in parts for item in part])


class _RebatchFn(beam.DoFn):
  """Joins small batches into batches of about `size` records, per window.

  Dedup splits each read batch by shard (16 ways), so what leaves it is many
  small batches; every later step costs per batch (a staging file, an Arrow
  piece, a partial aggregate), so they are joined again. What is buffered is
  emitted at the end of each bundle: nothing waits past it. Not
  `BatchElements`: that would first make every record an element again.
  """

  def __init__(self, size):
    self._size = size

  def start_bundle(self):
    self._buffers = {}

  def process(self, batch, window=beam.DoFn.WindowParam,
              timestamp=beam.DoFn.TimestampParam):
    key = (window, timestamp)
    parts, rows = self._buffers.get(key, ([], 0))
    parts.append(batch)
    rows += len(batch)
    if rows >= self._size:
      self._buffers.pop(key, None)
      yield _joined(parts)
    else:
      self._buffers[key] = (parts, rows)

  def finish_bundle(self):
    for (window, timestamp), (parts, _) in self._buffers.items():
      yield WindowedValue(_joined(parts), timestamp, [window])
    self._buffers = {}


class Rebatch(beam.PTransform):
  """Batches in; batches of about `size` records out (same records, same order
  within a batch's window); `Batch`es or Arrow tables (`element_type`)."""

  def __init__(self, size=5000, element_type=Batch):
    super().__init__()
    self._size, self._type = size, element_type

  def expand(self, batches):
    return batches | 'Join' >> beam.ParDo(
        _RebatchFn(self._size)).with_output_types(self._type)
