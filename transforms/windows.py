"""`WindowedViews`: the whole windowing policy in one transform.

Each view (`views.VIEWS`) is an event-time window with a trigger after the
watermark, a late firing per late element, optional early firings, accumulating
panes and `allowed_lateness`. The sink upserts each pane, so a late pane replaces
the row, never adds to it.

This is the per-record shape (Dataflow, Flink, `--execution per_record`); the
local streaming runner runs the same rule on micro-batches, keeping the
windows in state itself (`batched_windows.py`).

Late data is never lost silently. Beam drops an element that reaches a
GroupByKey after its window's end + allowed lateness, without a trace. So:

1. A stateful *late-data gate* (streaming only; in batch nothing is late) sees
   every event before any GroupByKey. It keeps a floor of the watermark: event-time timers set at each seen window's end + lateness fire
   when the watermark passes them, and the fired time is the floor. For each view
   the gate keeps only the windows whose end + lateness is above the floor; a
   window at or below it is missed. An event that missed any view's window gets
   one `late_event` dead letter naming those views (it stays in `events`).
2. The gate's accepted windows travel with the element and a WindowFn assigns
   exactly those windows, so a view never counts an event in a window the gate
   called missed (for sliding windows some of an event's windows may be missed
   and others not).
3. The floor can lag the true watermark (the gate learns it only from its own
   timers), so Beam's own allowed lateness on the GroupByKeys is the policy's
   lateness plus `beam_lateness_margin_s` (default: the dedup TTL): whatever the
   gate passes, Beam keeps. An event is thus counted in a view or kept as a dead
   letter, never neither. Near the boundary (within the floor's lag) an event may
   be counted in a late pane rather than dead-lettered.
"""
import datetime
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.coders.coders import IntervalWindowCoder
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from schemas.records import DeadLetter, LATE_EVENT
from transforms.views import (VIEWS, add_event, from_micros, merge, micros,
                              new_accumulator, view_row, window_starts)

__all__ = ['WindowedViews', 'ViewPolicy', 'LATE_EVENTS', 'accepted_windows',
           'late_letter']

LATE_EVENTS = 'late_events'
# The gate's floor is per key, and a key learns the watermark only from its own
# timers, so every key must see every window's timer: one key. Its state is a
# handful of window ends, so the cost per event is small; a runner processes one
# key serially, which bounds the streaming rate of the gate (see README).
_GATE_KEY = 0


class ViewPolicy(NamedTuple):
  """Every windowing knob, from options."""
  allowed_lateness_s: int = 3600
  early_firing_s: Optional[int] = None
  beam_lateness_margin_s: int = 86400
  streaming: bool = False


class _ViewElement(NamedTuple):
  """What one view needs of one event, with the windows the gate accepted."""
  key: tuple
  starts: tuple
  event_micros: int
  user_id: str


def accepted_windows(event, floor_us, lateness_s):
  """{view name: accepted window starts}, and the names of the views missed."""
  t = micros(event.event_time)
  accepted, missed = {}, []
  for spec in VIEWS:
    starts = window_starts(t, spec.size_s, spec.period_s)
    keep = tuple(s for s in starts
                 if s + (spec.size_s + lateness_s) * 1000000 > floor_us)
    accepted[spec.name] = keep
    if len(keep) < len(starts):
      missed.append(spec.name)
  return accepted, missed


def late_letter(event, missed, lateness_s, floor_us):
  """The `late_event` dead letter of an event that missed views' windows
  (`missed`: their names) when the gate's floor was `floor_us`."""
  return DeadLetter.of(
      LATE_EVENT,
      'too late for %s: window end + %d s lateness is behind the watermark '
      '(>= %s)' % (', '.join(missed), lateness_s,
                   from_micros(floor_us).isoformat()),
      event.raw, event.origin, idempotency_key=event.idempotency_key,
      tenant_id=event.tenant_id)


def _view_outputs(event, accepted):
  for spec in VIEWS:
    if accepted[spec.name]:
      yield beam.pvalue.TaggedOutput(spec.name, _ViewElement(
          spec.key(event), accepted[spec.name], micros(event.event_time),
          event.user_id))


class _AssignAllFn(beam.DoFn):
  """Batch: every window is accepted (the watermark only moves at the end)."""

  def process(self, event):
    accepted, _ = accepted_windows(event, -2 ** 63, 0)
    yield from _view_outputs(event, accepted)


class _LateDataGateFn(beam.DoFn):
  """Streaming: splits events into per-view windows and too-late dead letters."""

  FLOOR = ReadModifyWriteStateSpec('floor', VarIntCoder())
  PENDING = ReadModifyWriteStateSpec('pending', PickleCoder())
  TICK = TimerSpec('tick', TimeDomain.WATERMARK)

  def __init__(self, lateness_s):
    self._lateness_s = lateness_s

  def process(self, element, floor=beam.DoFn.StateParam(FLOOR),
              pending=beam.DoFn.StateParam(PENDING),
              tick=beam.DoFn.TimerParam(TICK)):
    _, event = element
    floor_us = floor.read()
    floor_us = -2 ** 63 if floor_us is None else floor_us
    accepted, missed = accepted_windows(event, floor_us, self._lateness_s)
    if missed:
      yield beam.pvalue.TaggedOutput(LATE_EVENTS, late_letter(
          event, missed, self._lateness_s, floor_us))
    ends = set(pending.read() or ())
    for spec in VIEWS:
      for start in accepted[spec.name]:
        ends.add(start + (spec.size_s + self._lateness_s) * 1000000)
    if ends:
      pending.write(sorted(ends))
      tick.set(Timestamp(micros=min(ends)))
    yield from _view_outputs(event, accepted)

  @on_timer(TICK)
  def on_tick(self, fired=beam.DoFn.TimestampParam,
              floor=beam.DoFn.StateParam(FLOOR),
              pending=beam.DoFn.StateParam(PENDING),
              tick=beam.DoFn.TimerParam(TICK)):
    fired_us = fired.micros
    floor.write(max(fired_us, floor.read() or -2 ** 63))
    rest = [end for end in (pending.read() or ()) if end > fired_us]
    pending.write(rest)
    if rest:
      tick.set(Timestamp(micros=rest[0]))


class AcceptedWindows(beam_window.NonMergingWindowFn):
  """Assigns the windows the gate accepted (carried by the element)."""

  def __init__(self, size_s):
    self._size_us = size_s * 1000000

  def assign(self, context):
    return [beam_window.IntervalWindow(
        Timestamp(micros=s), Timestamp(micros=s + self._size_us))
            for s in context.element.starts]

  def get_window_coder(self):
    return IntervalWindowCoder()

  def __eq__(self, other):
    return type(self) is type(other) and self._size_us == other._size_us

  def __hash__(self):
    return hash((type(self), self._size_us))


class _ViewCombineFn(beam.CombineFn):
  """Counts events, keeps the newest event time and the distinct users."""

  def create_accumulator(self):
    return new_accumulator()

  def add_input(self, acc, element):
    return add_event(acc, element.event_micros, element.user_id)

  def merge_accumulators(self, accumulators):
    return merge(accumulators)

  def extract_output(self, acc):
    return acc


class _ToRowFn(beam.DoFn):

  def __init__(self, spec):
    self._spec = spec

  def process(self, keyed, window=beam.DoFn.WindowParam,
              pane=beam.DoFn.PaneInfoParam):
    key, acc = keyed
    timing = PaneInfoTiming.to_string(pane.timing) if pane else 'UNKNOWN'
    if timing == 'UNKNOWN':
      timing = 'ON_TIME'  # batch: one pane per window, fired at the end
    yield view_row(self._spec, window.start.micros, key, acc, timing,
                   datetime.datetime.now(datetime.timezone.utc))


class WindowedViews(beam.PTransform):
  """Enriched events in; {view name: rows, LATE_EVENTS: dead letters} out.

  Args:
    policy: `ViewPolicy` (lateness, early firings, streaming).
  """

  def __init__(self, policy: ViewPolicy):
    super().__init__()
    if policy.allowed_lateness_s < 0:
      raise ValueError('allowed_lateness_s must be >= 0')
    self._policy = policy

  def _trigger(self):
    early = None
    if self._policy.early_firing_s:
      early = triggers.AfterProcessingTime(self._policy.early_firing_s)
    return triggers.AfterWatermark(early=early, late=triggers.AfterCount(1))

  def expand(self, events):
    names = [spec.name for spec in VIEWS]
    if self._policy.streaming:
      split = (
          events
          | 'KeyForGate' >> beam.Map(lambda e: (_GATE_KEY, e))
          | 'LateDataGate' >> beam.ParDo(_LateDataGateFn(
              self._policy.allowed_lateness_s)).with_outputs(
                  LATE_EVENTS, *names))
      late = split[LATE_EVENTS]
    else:
      split = events | 'AssignWindows' >> beam.ParDo(
          _AssignAllFn()).with_outputs(*names)
      late = events.pipeline | 'NoLateEvents' >> beam.Create([])
    result = {LATE_EVENTS: late}
    lateness = (self._policy.allowed_lateness_s
                + self._policy.beam_lateness_margin_s)
    for spec in VIEWS:
      result[spec.name] = (
          split[spec.name]
          | '%s/Window' % spec.name >> beam.WindowInto(
              AcceptedWindows(spec.size_s), trigger=self._trigger(),
              accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
              allowed_lateness=lateness)
          | '%s/Key' % spec.name >> beam.Map(lambda v: (v.key, v))
          | '%s/Aggregate' % spec.name >> beam.CombinePerKey(_ViewCombineFn())
          | '%s/Rows' % spec.name >> beam.ParDo(_ToRowFn(spec)))
    return result
