"""A generated stream of events in event-time order, batch by batch, and what
it holds: the input of the streaming soak (`benchmarks.stream_soak`) and of
its test.

Each batch is what arrives in one step of the stream: valid events from the
producer library (`pipelines.generate.make_event`) for `users` users of
`tenants` tenants over `hours` of event time, with a producer's retries of
events of the last two hours (within any dedup TTL of a day: duplicates),
bad records of every kind, blank lines, events two minutes late (late panes)
and events three hours late (from the fifth hour on: too late for every
view, so `late_event` letters, still stored). After each batch the watermark is the batch's latest event
time. `manifest` counts each kind, so a run can be checked against it.
"""
import datetime
import json
import random

from pipelines.generate import bad_record, make_event
from schemas.records import RawRecord
from transforms.views.specs import micros

__all__ = ['EventStream']

_UTC = datetime.timezone.utc
_TYPES = ['page_view', 'page_view', 'click', 'purchase']
_RETRY_WINDOW = datetime.timedelta(hours=2)


class EventStream(object):
  """Iterating yields (list of `RawRecord`s, watermark in micros) per batch;
  `manifest` holds the counts of what was yielded so far."""

  def __init__(self, events, hours=96.0, users=5000, tenants=10, seed=7,
               batch_size=5000, start='2024-03-01T00:00:00Z',
               duplicate_rate=0.05, bad_rate=0.01, blank_rate=0.002,
               late_rate=0.002, too_late_rate=0.0002):
    self.events, self.batch_size = events, batch_size
    self._rng = random.Random(seed)
    self._start = datetime.datetime.fromisoformat(start.replace('Z', '+00:00'))
    self._span_s = hours * 3600
    # Three hours behind is too late for every view once the watermark has
    # passed the start by more than that and the lateness (before, nothing
    # is behind it yet).
    self._too_late_from = self._start + datetime.timedelta(hours=5)
    self._tenants = ['tenant-%d' % i for i in range(tenants)]
    self._users = ['user-%04d' % i for i in range(users)]
    self._rates = (duplicate_rate, bad_rate, blank_rate, late_rate,
                   too_late_rate)
    self.manifest = {'records': 0, 'blank_lines': 0, 'unique_events': 0,
                     'duplicates': 0, 'bad': {}, 'late': 0, 'too_late': 0}

  def _event(self, at):
    rng = self._rng
    return make_event(rng, rng.choice(self._tenants), rng.choice(self._users),
                      rng.choice(_TYPES), at)

  def __iter__(self):
    rng, manifest = self._rng, self.manifest
    duplicate, bad, blank, late, too_late = self._rates
    # (event time, envelope) in order; those from `first` on are of the last
    # two hours, the ones a producer may still retry.
    recent, first = [], 0
    batch, latest = [], None
    for i in range(self.events):
      now = self._start + datetime.timedelta(
          seconds=self._span_s * i / self.events + rng.random())
      latest = now if latest is None or now > latest else latest
      while first < len(recent) and recent[first][0] < now - _RETRY_WINDOW:
        first += 1
      if first > 100000:
        recent, first = recent[first:], 0
      roll = rng.random()
      if rng.random() < blank:
        batch.append(RawRecord(b'   ', 'stream:%d:blank' % i))
        manifest['blank_lines'] += 1
      if first < len(recent) and roll < duplicate:
        _, envelope = recent[rng.randrange(first, len(recent))]
        data = json.dumps(dict(envelope, trace_id='t-retry-%x' % (
            rng.getrandbits(48)))).encode('utf-8')
        manifest['duplicates'] += 1
      elif roll < duplicate + bad:
        kind, data = bad_record(rng, self._event(now))
        manifest['bad'][kind] = manifest['bad'].get(kind, 0) + 1
      else:
        at = now
        if roll < duplicate + bad + too_late and now >= self._too_late_from:
          at, kind = now - datetime.timedelta(hours=3), 'too_late'
        elif roll < duplicate + bad + too_late + late:
          at, kind = now - datetime.timedelta(minutes=2), 'late'
        else:
          kind = None
        envelope = self._event(at)
        if kind:
          manifest[kind] += 1
        else:
          recent.append((now, envelope))
        data = json.dumps(envelope).encode('utf-8')
        manifest['unique_events'] += 1
      batch.append(RawRecord(data, 'stream:%d' % i))
      manifest['records'] += 1
      if len(batch) >= self.batch_size:
        yield batch, micros(latest)
        batch = []
    if batch:
      yield batch, micros(latest)
