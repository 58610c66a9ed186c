"""The streaming views on micro-batches (the local runner), by state and timers.

Why not Beam's windows here: the local streaming runner keeps a window's
state until its trigger finishes, and a trigger with late firings never
finishes (Beam 2.77's trigger driver: "TODO: allowed lateness";
apache/beam#21260, #18642), so every window's elements stay in memory for
the whole run. Measured with Beam's windows merging per-batch partials: a
2,000,000-event stream over 96 hours grew ~870 bytes per record to its end
(2.1 GB). Dataflow and Flink drop a window at its end + allowed lateness;
the per-record path (`windows.py`) runs there.

So here one stateful step on one key (like the per-record late-data gate)
keeps the windows itself, each view in its own state cell with its own
timer (`ViewWindows`):

* each event of a batch is sorted by the gate's rule
  (`windows.accepted_windows` against the floor of the watermark): one that
  missed a view's window is one `late_event` letter naming the views; each
  accepted (window, key) is added to the window's accumulator
  (`views.add_event`, with the user only for the view that counts users:
  the state of the others is rewritten at every firing, and user sets made
  the minute view's the largest), and a window already final gives a LATE
  row for each key the batch changed;
* a view's watermark timer fires at the earliest end of its windows not yet
  final: each window that ended gives its rows ON_TIME (every key), and each
  past its end + allowed lateness is dropped (an event for it after that is
  too late); with every window final, it fires at the earliest end +
  lateness. The fired times are the floor. (One firing per window end: the
  local runner makes each firing a bundle for every step after this one.)
* with `early_firing_s`, a batch that changed an open window gives EARLY rows
  of the keys changed since, once that long (wall clock) has passed since
  the first of those changes. (A DoFn cannot read the runner's processing
  time, and under a test stream it is not the wall clock.)

Rows are `views.view_row`s with the timings the per-record panes get; the
final rows equal the per-record path's (tests compare them on generated
streams), and memory holds a window only until its end + allowed lateness.
"""
import datetime
import time
from typing import Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.runners.worker.statecache import CacheAware
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from transforms.batch import Batch
from transforms.views import VIEWS, add_event, micros, new_accumulator, view_row
from transforms.windows import (LATE_EVENTS, ViewPolicy, _GATE_KEY,
                                accepted_windows, late_letter)

__all__ = ['BatchedWindowedViews', 'ViewWindows']

_HOURLY, _MINUTE, _ACTIVE = ('user_activity_hourly', 'event_counts_1m',
                             'active_users_15m')
# One state cell and one timer per view, declared by name below.
assert [spec.name for spec in VIEWS] == [_HOURLY, _MINUTE, _ACTIVE]
_SPECS = {spec.name: spec for spec in VIEWS}


class ViewWindows(CacheAware):
  """One view's windows not yet dropped: {start: {key: accumulator}}, the
  starts already final (ON_TIME given), and for early rows the keys changed
  since the last ones and when (wall clock) the first of them changed."""

  def __init__(self, windows=None, final=None, changed=None, since=None):
    self.windows = windows if windows is not None else {}
    self.final = final if final is not None else set()
    self.changed = changed if changed is not None else {}
    self.since = since

  def due(self, size_us, lateness_us):
    """When the watermark next matters (micros): the earliest end of a
    window not final; if all are final, the earliest end + lateness (so
    windows are dropped by the firings that make others final, and a timer
    of their own only when nothing else is due); None if none."""
    ends = [start + size_us for start in self.windows
            if start not in self.final]
    if ends:
      return min(ends)
    return min(self.windows) + size_us + lateness_us if self.windows else None

  def get_referents_for_cache(self):
    return []

  def __reduce__(self):
    return ViewWindows, (self.windows, self.final, self.changed, self.since)


def _rows(spec, windows, keys_by_start, timing):
  """A `Batch` of the view rows of `keys_by_start` ({start: keys}), or None."""
  now = datetime.datetime.now(datetime.timezone.utc)
  rows = [view_row(spec, start, key, windows.windows[start][key], timing, now)
          for start in sorted(keys_by_start)
          for key in sorted(keys_by_start[start])]
  return Batch(rows) if rows else None


class _MicroBatchViewsFn(beam.DoFn):
  """The views of a stream of batches of events (module docstring)."""

  FLOOR = ReadModifyWriteStateSpec('floor', VarIntCoder())
  HOURLY = ReadModifyWriteStateSpec(_HOURLY, PickleCoder())
  MINUTE = ReadModifyWriteStateSpec(_MINUTE, PickleCoder())
  ACTIVE = ReadModifyWriteStateSpec(_ACTIVE, PickleCoder())
  HOURLY_TICK = TimerSpec(_HOURLY + '_tick', TimeDomain.WATERMARK)
  MINUTE_TICK = TimerSpec(_MINUTE + '_tick', TimeDomain.WATERMARK)
  ACTIVE_TICK = TimerSpec(_ACTIVE + '_tick', TimeDomain.WATERMARK)

  def __init__(self, lateness_s, early_firing_s=None, clock=time.monotonic):
    self._lateness_s = lateness_s
    self._lateness_us = lateness_s * 1000000
    self._early_s = early_firing_s
    self._clock = clock

  def process(self, element,
              floor=beam.DoFn.StateParam(FLOOR),
              hourly=beam.DoFn.StateParam(HOURLY),
              minute=beam.DoFn.StateParam(MINUTE),
              active=beam.DoFn.StateParam(ACTIVE),
              hourly_tick=beam.DoFn.TimerParam(HOURLY_TICK),
              minute_tick=beam.DoFn.TimerParam(MINUTE_TICK),
              active_tick=beam.DoFn.TimerParam(ACTIVE_TICK)):
    _, events = element
    cells = {_HOURLY: (hourly, hourly_tick), _MINUTE: (minute, minute_tick),
             _ACTIVE: (active, active_tick)}
    floor_us = _floor(floor)
    views = {name: state.read() or ViewWindows()
             for name, (state, _) in cells.items()}
    late = {name: {} for name in cells}
    now = self._clock()
    for event in events:
      accepted, missed = accepted_windows(event, floor_us, self._lateness_s)
      if missed:
        yield beam.pvalue.TaggedOutput(LATE_EVENTS, late_letter(
            event, missed, self._lateness_s, floor_us))
      t = micros(event.event_time)
      for spec in VIEWS:
        starts = accepted[spec.name]
        if not starts:
          continue
        windows, key = views[spec.name], spec.key(event)
        for start in starts:
          accumulators = windows.windows.setdefault(start, {})
          acc = accumulators.get(key)
          if acc is None:
            acc = accumulators[key] = new_accumulator()
          add_event(acc, t, event.user_id if spec.counts_users else None)
          if start in windows.final:
            late[spec.name].setdefault(start, set()).add(key)
          elif self._early_s:
            windows.changed.setdefault(start, set()).add(key)
            windows.since = now if windows.since is None else windows.since
    for name, (state, tick) in cells.items():
      spec, windows = _SPECS[name], views[name]
      rows = _rows(spec, windows, late[name], 'LATE')
      if rows:
        yield beam.pvalue.TaggedOutput(name, rows)
      if windows.since is not None and now - windows.since >= self._early_s:
        rows = _rows(spec, windows, windows.changed, 'EARLY')
        windows.changed, windows.since = {}, None
        if rows:
          yield beam.pvalue.TaggedOutput(name, rows)
      if windows.windows:
        state.write(windows)
        tick.set(Timestamp(micros=windows.due(spec.size_s * 1000000,
                                              self._lateness_us)))

  def _fire(self, name, fired, floor, state, tick):
    """A view's timer: ON_TIME rows of the windows that ended, drops the
    windows past their end + lateness, and raises the floor."""
    fired_us = fired.micros
    floor.write(max(fired_us, _floor(floor)))
    windows = state.read()
    if windows is None:
      return
    spec = _SPECS[name]
    size_us = spec.size_s * 1000000
    ended = {start: windows.windows[start] for start in windows.windows
             if start not in windows.final and start + size_us <= fired_us}
    rows = _rows(spec, windows, ended, 'ON_TIME')
    if rows:
      yield beam.pvalue.TaggedOutput(name, rows)
    windows.final.update(ended)
    for start in ended:
      windows.changed.pop(start, None)
    for start in [s for s in windows.windows
                  if s + size_us + self._lateness_us <= fired_us]:
      del windows.windows[start]
      windows.final.discard(start)
    if not windows.changed:
      windows.since = None
    if windows.windows:
      state.write(windows)
      tick.set(Timestamp(micros=windows.due(size_us, self._lateness_us)))
    else:
      state.clear()

  @on_timer(HOURLY_TICK)
  def on_hourly(self, fired=beam.DoFn.TimestampParam,
                floor=beam.DoFn.StateParam(FLOOR),
                state=beam.DoFn.StateParam(HOURLY),
                tick=beam.DoFn.TimerParam(HOURLY_TICK)):
    yield from self._fire(_HOURLY, fired, floor, state, tick)

  @on_timer(MINUTE_TICK)
  def on_minute(self, fired=beam.DoFn.TimestampParam,
                floor=beam.DoFn.StateParam(FLOOR),
                state=beam.DoFn.StateParam(MINUTE),
                tick=beam.DoFn.TimerParam(MINUTE_TICK)):
    yield from self._fire(_MINUTE, fired, floor, state, tick)

  @on_timer(ACTIVE_TICK)
  def on_active(self, fired=beam.DoFn.TimestampParam,
                floor=beam.DoFn.StateParam(FLOOR),
                state=beam.DoFn.StateParam(ACTIVE),
                tick=beam.DoFn.TimerParam(ACTIVE_TICK)):
    yield from self._fire(_ACTIVE, fired, floor, state, tick)


def _floor(floor):
  """The floor of the watermark (micros): the latest timer fired."""
  floor_us = floor.read()
  return -2 ** 63 if floor_us is None else floor_us


class BatchedWindowedViews(beam.PTransform):
  """Streaming, micro-batches: `Batch`es of enriched events in; {view name:
  `Batch`es of view rows, LATE_EVENTS: dead letters} out.

  Args:
    policy: `ViewPolicy` (allowed lateness, early firings); streaming only
      (bounded input: `batched_views.BatchedViews`). Beam's lateness margin
      does not apply: no Beam window is involved.
  """

  def __init__(self, policy: ViewPolicy):
    super().__init__()
    if policy.allowed_lateness_s < 0:
      raise ValueError('allowed_lateness_s must be >= 0')
    if not policy.streaming:
      raise ValueError('micro-batch views are for streaming runs')
    self._policy = policy

  def expand(self, batches):
    names = [spec.name for spec in VIEWS]
    outputs = (batches
               | 'KeyForViews' >> beam.Map(
                   lambda b: (_GATE_KEY, b)).with_output_types(Tuple[int, Batch])
               | 'Views' >> beam.ParDo(_MicroBatchViewsFn(
                   self._policy.allowed_lateness_s,
                   self._policy.early_firing_s)).with_outputs(
                       LATE_EVENTS, *names))
    result = {LATE_EVENTS: outputs[LATE_EVENTS]}
    for name in names:
      result[name] = outputs[name]
    return result
