"""Streaming views on micro-batches equal the per-record views: the same
panes in test_windows' scenarios, the same final rows and late letters on a
generated stream with late and too-late events (BundleBasedDirectRunner,
--streaming, TestStream); early rows and the end of a window's state with
the DoFn alone."""
import random
import threading

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from tests.test_dedup import FakeState, FakeTimer
from tests.test_windows import LATENESS, T0, _at, _streaming
from transforms.batch import Batch
from transforms.batched_windows import BatchedWindowedViews, _MicroBatchViewsFn
from transforms.windows import LATE_EVENTS, ViewPolicy, WindowedViews

# What the pipelines under test emit, by run: the runner runs them in this
# process, and a module-level dict is shared by name (a closure's would be a
# pickled copy).
_COLLECTED = {}
_LOCK = threading.Lock()


def _keep(run, name, value):
  with _LOCK:
    _COLLECTED.setdefault(run, {}).setdefault(name, []).append(value)


POLICY = ViewPolicy(allowed_lateness_s=LATENESS, beam_lateness_margin_s=3600,
                    streaming=True)


def _batch(*timestamped):
  return Batch([tv.value for tv in timestamped])


def _run(stream, views, run='run'):
  """Runs `views` on `stream`; {view name: rows, 'late': letters} emitted.
  Collected as they are emitted, not by `assert_that`: the rows of the
  windows that end with the stream come from timers that fire when it ends,
  after the global window `assert_that` gathers in has closed."""
  _COLLECTED.pop(run, None)
  with TestPipeline(options=_streaming()) as p:
    out = p | stream | views
    for view in ('user_activity_hourly', 'event_counts_1m', 'active_users_15m'):
      rows = out[view] | 'Flat%s' % view >> beam.FlatMap(
          lambda r: list(r) if isinstance(r, Batch) else [r])
      _ = rows | 'Keep%s' % view >> beam.Map(
          lambda r, run=run, view=view: _keep(run, view, r))
    _ = out[LATE_EVENTS] | beam.Map(lambda d, run=run: _keep(run, 'late', d))
  return _COLLECTED.get(run, {})


def test_minute_view_on_time_late_and_too_late_as_per_record():
  """test_windows' first scenario, in batches: the same panes and letter."""
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_batch(_at(5), _at(10, 'u2'))])
            .advance_watermark_to(T0 + 120)
            .add_elements([_batch(_at(20, 'u3'))])
            .advance_watermark_to(T0 + 60 + LATENESS + 1)
            .add_elements([_batch(_at(30, 'u4', payload__url='/too-late'))])
            .advance_watermark_to_infinity())
  out = _run(stream, BatchedWindowedViews(POLICY))
  assert sorted((r['window_start'].strftime('%H:%M'), r['event_type'],
                 r['event_count'], r['pane_timing'])
                for r in out['event_counts_1m']) == [
      ('10:00', 'page_view', 2, 'ON_TIME'), ('10:00', 'page_view', 3, 'LATE')]
  [letter] = out['late']
  assert letter.error_kind == 'late_event' and b'/too-late' in letter.raw
  assert letter.error_message.startswith('too late for event_counts_1m:')
  # The hourly window (10:00-11:00) was not missed: the event counts there.
  assert sorted((r['user_id'], r['event_count'], r['pane_timing'])
                for r in out['user_activity_hourly']) == [
      ('u1', 1, 'ON_TIME'), ('u2', 1, 'ON_TIME'), ('u3', 1, 'ON_TIME'),
      ('u4', 1, 'ON_TIME')]


def test_sliding_view_late_for_its_oldest_window_only_as_per_record():
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([_batch(_at(200))])
            .advance_watermark_to(T0 + 300 + LATENESS + 5)
            .add_elements([_batch(_at(240, 'u2'))])
            .advance_watermark_to_infinity())
  out = _run(stream, BatchedWindowedViews(POLICY))
  assert sorted((r['window_start'].strftime('%H:%M'), r['active_users'],
                 r['pane_timing']) for r in out['active_users_15m']) == [
      ('09:50', 1, 'ON_TIME'), ('09:55', 1, 'ON_TIME'), ('09:55', 2, 'LATE'),
      ('10:00', 1, 'ON_TIME'), ('10:00', 2, 'LATE')]


def _fn_alone(early_firing_s=None, clock=None):
  """The views DoFn with fake state and timers: (fn, its state args)."""
  fn = _MicroBatchViewsFn(LATENESS, early_firing_s, clock=clock)
  return fn, [FakeState() for _ in range(4)] + [FakeTimer() for _ in range(3)]


def _rows_of(outputs, view):
  return [(r['event_count'] if 'event_count' in r else r['active_users'],
           r['pane_timing']) for o in outputs
          if getattr(o, 'tag', None) == view for r in o.value]


def test_early_rows_come_with_a_batch_once_the_delay_has_passed():
  """With early firings every 10 s: a batch 11 s (wall clock) after the
  first change gives EARLY rows of the keys changed since; the window's end
  gives its ON_TIME rows; a window's state goes at its end + lateness."""
  now = [0.0]
  fn, args = _fn_alone(10, clock=lambda: now[0])
  floor, minute, ticks = args[0], args[2], args[4:]
  first = list(fn.process((0, _batch(_at(5), _at(6, 'u2'))), *args))
  assert _rows_of(first, 'event_counts_1m') == []
  now[0] = 11.0
  second = list(fn.process((0, _batch(_at(7, 'u3'))), *args))
  assert _rows_of(second, 'event_counts_1m') == [(3, 'EARLY')]
  assert ticks[1].at == Timestamp(T0 + 60)  # the minute window's end
  on_time = list(fn.on_minute(Timestamp(T0 + 60), floor, minute, ticks[1]))
  assert _rows_of(on_time, 'event_counts_1m') == [(3, 'ON_TIME')]
  assert floor.value == (T0 + 60) * 1000000
  assert ticks[1].at == Timestamp(T0 + 60 + LATENESS)
  late = list(fn.process((0, _batch(_at(8, 'u4'))), *args))
  assert _rows_of(late, 'event_counts_1m') == [(4, 'LATE')]
  assert list(fn.on_minute(Timestamp(T0 + 60 + LATENESS), floor, minute,
                           ticks[1])) == []
  assert minute.value is None  # the window is dropped
  too_late = list(fn.process((0, _batch(_at(9, 'u5'))), *args))
  assert [o.value.error_kind for o in too_late
          if getattr(o, 'tag', None) == LATE_EVENTS] == ['late_event']
  assert _rows_of(too_late, 'event_counts_1m') == []


def test_only_the_view_that_counts_users_keeps_them_in_state():
  """The minute and hourly windows are rewritten at every firing: their
  accumulators hold counts and times, no user set; the 15-minute view's
  holds the distinct users it counts."""
  fn, args = _fn_alone(clock=lambda: 0.0)
  batch = _batch(_at(5), _at(6, 'u2'), _at(7, 'u2'), _at(8, 'u3'))
  list(fn.process((0, batch), *args))
  hourly, minute, active = (args[i].value for i in (1, 2, 3))
  for view in (hourly, minute):
    accs = [a for keys in view.windows.values() for a in keys.values()]
    assert accs and all(a[2] == set() for a in accs)
  assert sum(a[0] for keys in minute.windows.values()
             for a in keys.values()) == 4
  users = [a[2] for keys in active.windows.values() for a in keys.values()]
  assert users and all(len(u) == 3 for u in users)


def _generated_stream():
  """Three hours of events for 40 users in order, a watermark step after
  each batch of 25, and every 9th batch with a few events 2 minutes late
  (late panes) and one 3 hours late (too late for every view)."""
  rng = random.Random(3)
  stream = TestStream().advance_watermark_to(T0)
  steps, batches = [], []
  for b in range(60):
    at = [b * 180 + rng.randrange(180) for _ in range(25)]
    batch = [_at(s, 'u%d' % rng.randrange(40),
                 rng.choice(['page_view', 'click', 'purchase'])) for s in at]
    if b % 9 == 8:
      batch += [_at(b * 180 - 120 - i, 'u%d' % i) for i in range(3)]
      batch.append(_at(b * 180 - 3 * 3600, 'u-late'))
    batches.append([tv.value for tv in batch])
    steps.append(T0 + (b + 1) * 180)
  for batch, watermark in zip(batches, steps):
    stream = stream.add_elements([Batch(batch)]).advance_watermark_to(watermark)
  events = [e for batch in batches for e in batch]
  return stream.advance_watermark_to_infinity(), batches, steps, events


def _final(rows):
  """What the sink keeps per (view, window, key): the highest value."""
  def key(r):
    return (r['window_start'],) + tuple(
        r[c] for c in ('tenant_id', 'user_id', 'event_type') if c in r)
  value = 'active_users' if 'active_users' in rows[0] else 'event_count'
  best = {}
  for r in rows:
    k = key(r)
    if k not in best or r[value] > best[k]:
      best[k] = r[value]
  return sorted(best.items())


def test_generated_stream_gives_the_per_record_final_rows_and_letters():
  stream, batches, steps, events = _generated_stream()
  per_record = TestStream().advance_watermark_to(T0)
  for batch, watermark in zip(batches, steps):
    per_record = per_record.add_elements(
        [beam.window.TimestampedValue(e, watermark) for e in batch]
    ).advance_watermark_to(watermark)
  per_record = per_record.advance_watermark_to_infinity()
  micro = _run(stream, BatchedWindowedViews(POLICY), 'micro')
  per_record = _run(per_record, WindowedViews(POLICY), 'per_record')
  assert len(micro['late']) == 6 and sorted(
      d.raw for d in micro['late']) == sorted(d.raw for d in per_record['late'])
  for view in ('user_activity_hourly', 'event_counts_1m', 'active_users_15m'):
    assert _final(micro[view]) == _final(per_record[view]), view
  total = sum(v for _, v in _final(micro['event_counts_1m']))
  assert total == len(events) - 6  # every event not too late, once
