"""`DecodeTables`: batches of raw records to `events` Arrow tables, decoded in
a helper process too.

Decoding and validating is plain Python, about 40% of a run, and the local
runner runs a pipeline in one thread of one process. A table crosses
processes as a few buffers (events would be pickled and rebuilt one object
at a time, which cost as much as decoding them), so with one local worker
the decode step hands batches to a helper process and decodes others itself
whenever the helper already has enough in hand: both cores decode while this
process also runs the steps after decoding (`transforms/event_batches.py`).

Results leave in input order (dedup keeps a key's first copy in reading
order, as everywhere) and at most a few batches wait. A batch decoding
raises on fails the bundle, as it would here; if the helper dies (killed,
out of memory) the batches it held are decoded here and the next batch
starts a new helper. A bundle of one batch never starts the helper. The
helper is forked: it starts at once, inherits the loaded schemas and imports
nothing; it ends with its bundle, and with the job, even a killed one.
"""
import collections
import gc
import concurrent.futures
import multiprocessing
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from schemas.registry import load_registry
from transforms import counters
from transforms.ingest.decode import DEAD_LETTER_TAG
from transforms.ingest.decoding import decode_table
from transforms.tallies import TALLIES, Tally

__all__ = ['DecodeTables', 'HELPER_COUNTER', 'DecodeCounters',
           'decoded_outputs', 'raise_gc_thresholds', 'GC_THRESHOLDS']

# Batches decoded by the helper (its own namespace: not a pipeline counter).
HELPER_COUNTER = ('parallel_decode', 'batches_decoded_in_helper')


def _exit_with_parent(parent: int):
  """Runs in the helper as it starts: ends it once the process that started
  it is gone (killed, say), instead of it waiting on its queue forever and
  holding the job's output pipes open."""
  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)
  threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


# Batches handed to the helper and not yet back; a batch arriving while it
# has this many is decoded here.
HELPER_BATCHES = 2
# Batches decoded (by either) and not yet emitted, waiting for an earlier one.
MAX_WAITING = 8


# Decoding allocates millions of short-lived containers (events,
# payload dicts, rows); with CPython's default first threshold (700) the
# cyclic collector ran so often it took about a quarter of a run (measured on
# 200,000 events: the main stage 12.3 s -> 9.3 s, and a lower peak). Raised
# once per worker process, never lowered.
GC_THRESHOLDS = (50000, 20, 20)


def raise_gc_thresholds():
  if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
    gc.set_threshold(*GC_THRESHOLDS)


class DecodeCounters(object):
  """The decode step's counts, counted per decoded batch (Beam counters, and
  as data: `tallies.Tally`)."""

  def __init__(self):
    self._tally = Tally()

  def count(self, decoded, records: int):
    """Counts `decoded`, the result of decoding `records` raw records."""
    self._tally.inc(counters.BLANK_LINES, decoded.blank)
    self._tally.inc(counters.INPUT_RECORDS, records - decoded.blank)
    self._tally.inc(counters.VALID_EVENTS, len(decoded.events))
    self._tally.inc(counters.UNKNOWN_FIELDS, decoded.unknown_fields)
    self._tally.inc(counters.UPCAST_INEXACT, decoded.inexact_amounts)

  def emit(self):
    """The bundle's counts, for `finish_bundle`."""
    return self._tally.emit()


def decoded_outputs(decoded, wrap=lambda value: value):
  """A decoded batch's outputs: each dead letter on the `dead_letters` tag,
  then its events batch if it has rows, each through `wrap`."""
  for letter in decoded.letters:
    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, wrap(letter))
  if decoded.events.num_rows:
    yield wrap(decoded.events)


class _DecodeTablesFn(beam.DoFn):
  """Batches of raw records in; `events` tables (main) and dead letters out."""

  def __init__(self, registry_path=None, helper=False):
    self._registry_path = registry_path
    self._helper = helper

  def setup(self):
    raise_gc_thresholds()
    load_registry(self._registry_path)  # loaded before a fork: inherited
    self._counters = DecodeCounters()
    self._in_helper = Metrics.counter(*HELPER_COUNTER)
    self.helper_batches = 0  # the counter's value in this instance
    self._pool = None

  def start_bundle(self):
    # (result or the helper's future, the batch's records, timestamp, window)
    self._waiting = collections.deque()
    self._batches = 0

  def process(self, batch, timestamp=beam.DoFn.TimestampParam,
              window=beam.DoFn.WindowParam):
    records = list(batch)
    self._batches += 1
    if self._helper and self._batches > 1 and self._pool is None:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          1, mp_context=multiprocessing.get_context('fork'),
          initializer=_exit_with_parent, initargs=(os.getpid(),))
    in_helper = sum(isinstance(w[0], concurrent.futures.Future)
                    and not w[0].done() for w in self._waiting)
    result = None
    if self._pool is not None and in_helper < HELPER_BATCHES:
      try:
        result = self._pool.submit(decode_table, records, self._registry_path)
      except BrokenProcessPool:  # it died: a new one from the next batch
        self.teardown()
    if result is None:
      result = decode_table(records, self._registry_path)
    self._waiting.append((result, records, timestamp, window))
    yield from self._emit(block=len(self._waiting) > MAX_WAITING)

  def finish_bundle(self):
    yield from self._emit(block=True, everything=True)
    yield from self._counters.emit()
    # The helper lives for one bundle: its memory is freed before the steps
    # after decoding (the commit) run, and starting one is a fork.
    self.teardown()

  def _emit(self, block, everything=False):
    """Emits waiting results from the oldest on while they are ready (with
    `block`, waits for the oldest; with `everything`, for all)."""
    while self._waiting:
      result, records, timestamp, window = self._waiting[0]
      if isinstance(result, concurrent.futures.Future):
        if not (block or result.done()):
          return
        try:
          result = result.result()
          self._in_helper.inc()
          self.helper_batches += 1
        except (BrokenProcessPool, concurrent.futures.CancelledError):
          # The helper died (killed, out of memory): the batches it held are
          # decoded here; the next submit finds it broken and replaces it.
          result = decode_table(records, self._registry_path)
        except BaseException:
          # Decoding raised (a bug): the bundle fails as if decoded here.
          self.teardown()
          raise
      self._waiting.popleft()
      block = everything
      self._counters.count(result, len(records))
      yield from decoded_outputs(
          result, lambda value: WindowedValue(value, timestamp, [window]))

  def teardown(self):
    if self._pool is not None:
      self._pool.shutdown(cancel_futures=True)
      self._pool = None


class DecodeTables(beam.PTransform):
  """Batches of raw records in; one `events` Arrow table per batch (not yet
  enriched, `processed_at` unset) and dead letters (`dead_letters`) out.

  Args:
    registry_path: the schema registry (default: the shipped one).
    helper: decode in a helper process too (one local worker only: a runner
      with several workers already has a process per core).
  """

  def __init__(self, registry_path=None, helper=False):
    super().__init__()
    self._registry_path, self._helper = registry_path, helper

  def expand(self, batches):
    return batches | 'DecodeValidate' >> beam.ParDo(
        _DecodeTablesFn(self._registry_path, self._helper)).with_output_types(
            pa.Table).with_outputs(DEAD_LETTER_TAG, TALLIES, main='events')
