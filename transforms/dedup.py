"""`DedupByIdempotencyKey`: drop retries by key, with state bounded by a TTL timer.

Why before windowing: a retry must not count twice in any view, and dedup in the
global window sees a retry whichever window it falls in. Why a hand-written
stateful DoFn rather than Beam's `DeduplicatePerKey`: that one always declares a
processing-time timer, which forces the slower BundleBasedDirectRunner locally,
and its TTL is wall-clock time, while the contract's TTL is event time.

Semantics: a key is remembered from its first copy until the watermark passes
that copy's timestamp + `ttl_s` (an event-time WATERMARK timer clears it); the
decode step stamps an event with the later of its event time and its arrival
at the source, so an old event arriving through a stream is remembered for the
TTL too (contract section 3). A copy arriving after that is treated as new:
intended, since the producer's retry window is long over (and the events
table's primary key still keeps one row per key; the sink counts it as already
stored, and no table counts it again). In batch the watermark only advances at
the end, so dedup spans the whole run.
"""
from typing import Tuple

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Duration

from schemas.records import Event
from transforms import counters
from transforms.tallies import TALLIES, Tally

__all__ = ['DedupByIdempotencyKey', 'DedupFn']


class DedupFn(beam.DoFn):
  """Keeps the first copy of each key; later copies within the TTL are counted."""

  SEEN = ReadModifyWriteStateSpec('seen', BooleanCoder())
  EXPIRY = TimerSpec('expiry', TimeDomain.WATERMARK)

  def __init__(self, ttl_s: int):
    self._ttl = Duration(seconds=ttl_s)

  def setup(self):
    self._tally = Tally()

  def process(self, element: Tuple[str, Event],
              timestamp=beam.DoFn.TimestampParam,
              seen=beam.DoFn.StateParam(SEEN),
              expiry=beam.DoFn.TimerParam(EXPIRY)):
    _, event = element
    if seen.read():
      self._tally.inc(counters.DUPLICATES)
      return
    seen.write(True)
    expiry.set(timestamp + self._ttl)
    yield event

  @on_timer(EXPIRY)
  def expire(self, seen=beam.DoFn.StateParam(SEEN)):
    seen.clear()

  def finish_bundle(self):
    yield from self._tally.emit()


class DedupByIdempotencyKey(beam.PTransform):
  """Events in, events with retries removed out (global window, stateful):
  `result.events`, and the step's counts on `result.tallies`.

  Args:
    ttl_s: seconds of event time a key is remembered (`--dedup_ttl`).
  """

  def __init__(self, ttl_s: int = 86400):
    super().__init__()
    if ttl_s < 0:
      raise ValueError('ttl_s must be >= 0, got %r' % ttl_s)
    self._ttl_s = ttl_s

  def expand(self, events):
    return (
        events
        | 'KeyByIdempotencyKey' >> beam.Map(
            lambda e: (e.idempotency_key, e)).with_output_types(
                Tuple[str, Event])
        | 'DropRetries' >> beam.ParDo(DedupFn(self._ttl_s)).with_outputs(
            TALLIES, main='events'))
