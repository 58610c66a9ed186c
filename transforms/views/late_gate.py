"""`LateDataGate`: the windowing policy's one decision made in Beam.

The views are maintained by the hot sink's commit from the events it newly
stores (`sql.py`), so they stay exact whatever the history of runs.
What Beam still decides, with its watermark and the allowed lateness, is
which events came too late for a view: the gate keeps a floor of the
watermark (event-time timers set at each window's end, and at its end + the
allowed lateness, fire when the watermark passes them; the fired time is the
floor), and an event whose earliest window of a view ended more than the
allowed lateness before the floor is too late for that view. The event gets
`missed_views` (the views that never count it) and one `late_event` dead
letter naming them (the row's `late_letter`); it is still stored in `events` in
both tiers. The sink writes the letter only if it stores the event, in the
same transaction, so a letter exists exactly for a stored event that some
view does not count (contract sections 2 and 4).

A view counts an event in all of its windows or, if it came too late for the
earliest of them, in none: one rule every view row can be recounted by.

The gate also reports its floor at each timer (the `floors` output): the
sink marks the early rows of windows the watermark has passed `ON_TIME`.

In batch nothing is late (the watermark passes the windows only when the
input ends): there the gate passes its input through untouched.

Parallel: each events batch goes to one of `shards` keys (by its first event's
key), so the gate's state and work spread over the workers. Every shard
learns the watermark from its own timers, set at the window ends (and ends +
lateness) of the events it saw, so a shard's floor is a lower bound of the
watermark, as the one key's was: an event the gate lets through counts in
the views, and the views stay exact either way. So that a shard that has
seen no event knows the watermark too, each shard is primed with an empty
batch at the job's start and from then on its timer also fires every
minute of the wall clock the watermark passes. What a shard cannot know is
the watermark before its first timer fires (the job's first seconds) or,
in a stream whose watermark is far behind the wall clock (a backfill), the
windows it has not seen: there it lets through an event one key would have
marked. The sink takes the highest floor any shard reported.
"""
import datetime
import time
from typing import NamedTuple, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from schemas.keys import key_shard
from schemas.records import DeadLetter, LATE_EVENT
from schemas.rows import EVENT_BATCH_SCHEMA, late_letter_row_json
from transforms.views.specs import VIEWS, from_micros, micros, window_starts

__all__ = ['LateDataGate', 'ViewPolicy', 'FLOORS', 'missed_views',
           'late_letter', 'mark_late', 'mark_late_table']

FLOORS = 'floors'
_NO_FLOOR = -2 ** 63


class ViewPolicy(NamedTuple):
  """Every windowing knob, from options."""
  allowed_lateness_s: int = 3600


def _earliest_end(spec, event_us):
  """The end (micros) of the earliest window of `spec` holding `event_us`."""
  return min(window_starts(event_us, spec.size_s, spec.period_s)) \
      + spec.size_s * 1000000


def missed_views(event, floor_us, lateness_s):
  """The names of the views `event` is too late for, the watermark being at
  least `floor_us`: its earliest window ended + `lateness_s` at or before it."""
  return _missed_at(micros(event.event_time), floor_us, lateness_s)


def late_letter(event, missed, lateness_s, floor_us):
  """The `late_event` dead letter of an event that missed views (`missed`:
  their names) when the gate's floor was `floor_us`."""
  return DeadLetter.of(
      LATE_EVENT, _late_message(missed, lateness_s, floor_us),
      event.raw, event.origin, idempotency_key=event.idempotency_key,
      tenant_id=event.tenant_id)


def mark_late(event, floor_us, lateness_s):
  """The event with its missed views and late letter (unchanged if none)."""
  missed = missed_views(event, floor_us, lateness_s)
  if not missed:
    return event
  return event._replace(missed_views=missed, late_letter=late_letter(
      event, missed, lateness_s, floor_us))


def _minute_us(t_us):
  """Every window of every view starts and ends on whole minutes, so the
  windows (and the views missed) of an event depend only on its minute."""
  return t_us - t_us % 60000000


def mark_late_table(table: pa.Table, floor_us, lateness_s, failed_at,
                    mask_fields=()):
  """An events batch with its rows' missed views and late letters (JSON
  text, `tables.STAGED_EVENTS.late_letter`) set; unchanged if no row is
  late. Returns (table, the window ends its rows need timers at)."""
  times = pc.cast(table.column('event_time'), pa.int64()).to_pylist()
  by_minute, ends = {}, set()
  for t in times:
    minute = _minute_us(t)
    if minute not in by_minute:
      by_minute[minute] = _missed_at(minute, floor_us, lateness_s)
      ends |= _window_ends_at(minute, lateness_s)
  if not any(by_minute.values()):
    return table, ends
  missed = [by_minute[_minute_us(t)] for t in times]
  letters = table.column('late_letter').to_pylist()
  raws = table.column('raw').to_pylist()
  origins = table.column('origin').to_pylist()
  keys = table.column('idempotency_key').to_pylist()
  tenants = table.column('tenant_id').to_pylist()
  for i, names in enumerate(missed):
    if names:
      letters[i] = late_letter_row_json(DeadLetter.of(
          LATE_EVENT, _late_message(names, lateness_s, floor_us), raws[i],
          origins[i], idempotency_key=keys[i], tenant_id=tenants[i]),
          failed_at, mask_fields)
  for name, values in (('missed_views', [list(m) for m in missed]),
                       ('late_letter', letters)):
    index = table.schema.get_field_index(name)
    table = table.set_column(index, table.schema.field(index),
                             pa.array(values, table.schema.field(index).type))
  return table, ends


def _missed_at(t_us, floor_us, lateness_s):
  return tuple(spec.name for spec in VIEWS
               if _earliest_end(spec, t_us) + lateness_s * 1000000 <= floor_us)


def _window_ends_at(t_us, lateness_s):
  """The times the gate needs its timers at for an event at `t_us`: each
  view's windows' ends (to report the watermark) and ends + lateness (to
  learn the floor)."""
  ends = set()
  for spec in VIEWS:
    for start in window_starts(t_us, spec.size_s, spec.period_s):
      end = start + spec.size_s * 1000000
      ends.add(end)
      ends.add(end + lateness_s * 1000000)
  return ends


def _late_message(missed, lateness_s, floor_us):
  return ('too late for %s: window end + %d s lateness is behind the '
          'watermark (>= %s)' % (', '.join(missed), lateness_s,
                                 from_micros(floor_us).isoformat()))


_TICK_US = 60 * 1000000  # every window starts and ends on a whole minute


def _wall_clock_us():
  return int(time.time() * 1000000)


class _LateDataGateFn(beam.DoFn):
  """(shard, events batch) in; the same rows, each marked with the
  views it missed, out; the shard's floor on `floors` at each timer.

  One state cell holds (floor, pending timer times, loop start), written
  only when it changes: every write costs the SDK harness's state cache a
  size measurement (about 1 ms here, `docs/benchmarks.md`).

  An empty batch primes the shard at the job's start: from the minute it
  arrives in (wall clock) the shard's timer loops, a minute at a time, while
  the next minute is not ahead of the wall clock, so every shard learns the
  watermark within its lag and a minute, whether it has seen events or not.
  Bounded by the wall clock, the loop stops once the watermark passes it
  (the end of a bounded input); it never walks the event time of a backfill.
  """

  STATE = ReadModifyWriteStateSpec('floor_and_ends', PickleCoder())
  TICK = TimerSpec('tick', TimeDomain.WATERMARK)

  def __init__(self, lateness_s, mask_fields=()):
    self._lateness_s = lateness_s
    self._mask_fields = mask_fields

  def process(self, element, state=beam.DoFn.StateParam(STATE),
              tick=beam.DoFn.TimerParam(TICK)):
    _, table = element
    floor_us, pending, loop_from = state.read() or (_NO_FLOOR, (), None)
    if not table.num_rows:  # the shard's primer
      now = _wall_clock_us()
      loop_from = now - now % _TICK_US
      ends = {max(loop_from, floor_us - floor_us % _TICK_US + _TICK_US)}
      marked = None
    else:
      marked, ends = mark_late_table(
          table, floor_us, self._lateness_s,
          datetime.datetime.now(datetime.timezone.utc), self._mask_fields)
    ends = tuple(end for end in sorted(ends.union(pending)) if end > floor_us)
    if ends != tuple(pending) or marked is None:
      state.write((floor_us, ends, loop_from))
      if ends and (not pending or ends[0] != pending[0]):
        tick.set(Timestamp(micros=ends[0]))
    if marked is not None:
      yield marked

  @on_timer(TICK)
  def on_tick(self, fired=beam.DoFn.TimestampParam,
              state=beam.DoFn.StateParam(STATE),
              tick=beam.DoFn.TimerParam(TICK)):
    floor_us, pending, loop_from = state.read() or (_NO_FLOOR, (), None)
    floor_us = max(fired.micros, floor_us)
    rest = set(end for end in pending if end > floor_us)
    if loop_from is not None and floor_us >= loop_from:
      following = floor_us - floor_us % _TICK_US + _TICK_US
      if following <= _wall_clock_us() + _TICK_US:
        rest.add(following)
    rest = tuple(sorted(rest))
    state.write((floor_us, rest, loop_from))
    if rest:
      tick.set(Timestamp(micros=rest[0]))
    yield beam.pvalue.TaggedOutput(FLOORS, floor_us)


def _shard_of(table, shards):
  return key_shard(table.column('idempotency_key')[0].as_py(), shards), table


class LateDataGate(beam.PTransform):
  """Events batches (Arrow tables) in; the same rows marked with the views they came
  too late for (`events`) and the gate's floor reports (`floors`, micros)
  out, as a dict.
  On bounded input (`streaming=False`) nothing is late: the batches pass
  through and no floor is reported.

  Args:
    policy: `ViewPolicy` (the allowed lateness).
    shards: keys the gate's state is spread over (`--state_shards`).
    streaming: whether the input is a stream.
    mask_fields: fields masked in the late letters' records
      (`schemas.masking.parse_fields`).
  """

  def __init__(self, policy: ViewPolicy, shards: int = 8, streaming=True,
               mask_fields=()):
    super().__init__()
    self._mask_fields = tuple(mask_fields)
    if policy.allowed_lateness_s < 0:
      raise ValueError('allowed_lateness_s must be >= 0')
    if shards < 1:
      raise ValueError('shards must be >= 1, got %r' % shards)
    self._policy, self._shards = policy, shards
    self._streaming = streaming

  def expand(self, events):
    """Returns {'events': marked batches, FLOORS: floor reports}."""
    if not self._streaming:
      return {'events': events, FLOORS: events | 'NoFloors' >> beam.FlatMap(
          lambda _: ()).with_output_types(int)}
    keyed = (events
             | 'SkipEmpty' >> beam.Filter(lambda table: table.num_rows)
             | 'ShardForGate' >> beam.Map(
                 _shard_of, self._shards).with_output_types(Tuple[int, pa.Table]))
    # One empty batch per shard starts its timer loop (see _LateDataGateFn).
    primers = events.pipeline | 'PrimeShards' >> beam.Create(
        [(shard, EVENT_BATCH_SCHEMA.empty_table())
         for shard in range(self._shards)]).with_output_types(
             Tuple[int, pa.Table])
    gated = (
        (keyed, primers)
        | 'WithPrimers' >> beam.Flatten()
        | 'Gate' >> beam.ParDo(_LateDataGateFn(
            self._policy.allowed_lateness_s,
            self._mask_fields)).with_output_types(pa.Table).with_outputs(
                FLOORS, main='events'))
    return {'events': gated.events, FLOORS: gated[FLOORS]}
