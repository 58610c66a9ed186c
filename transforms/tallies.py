"""A run's counts as data: what reaches `pipeline_metrics` on every runner.

Beam's counters stay (the runner's UI and Cloud Monitoring show them), but a
launcher can read them back only from a local runner: a job on Dataflow or
Flink runs elsewhere, and the command that submitted it has returned. So each
counting step also emits its counts as data, once per bundle, on a `tallies`
output (`Tally`); the graph gathers them into the hot sink, whose commit adds
them to `pipeline_metrics` under the run's id, in its transaction, with a
ledger of the tallies applied so a retried commit adds nothing twice.

A failed bundle's outputs are discarded by the runner, its tallies with them;
a retried bundle emits its own.
"""
import collections
import datetime
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import counters

__all__ = ['TALLIES', 'Tally', 'apply_tallies']

TALLIES = 'tallies'


class Tally(object):
  """One DoFn's counts: `inc` adds to a Beam counter and to this bundle's
  tally; `emit()`, called from `finish_bundle`, yields the bundle's tally
  ({'id': unique, 'counts': {name: n}}) on the `tallies` output."""

  def __init__(self):
    self._counters = {}
    self._counts = collections.Counter()

  def inc(self, name, n=1):
    if not n:
      return
    counter = self._counters.get(name)
    if counter is None:
      counter = self._counters[name] = Metrics.counter(counters.NAMESPACE, name)
    counter.inc(n)
    self._counts[name] += n

  def emit(self):
    if self._counts:
      yield beam.pvalue.TaggedOutput(TALLIES, WindowedValue(
          {'id': uuid.uuid4().hex, 'counts': dict(self._counts)},
          MIN_TIMESTAMP, [GlobalWindow()]))
      self._counts = collections.Counter()


def apply_tallies(con, run_id, tallies, now=None):
  """DuckDB, in the commit's open transaction (`con`): adds the tallies ({id: {name: n}}) not yet in
  `tally_ledger` to `pipeline_metrics` rows of `run_id`, records them there,
  and derives the run's `events_already_stored` (staged minus written)."""
  tallies = {t: c for t, c in tallies.items() if c}
  seen = set()
  if tallies:
    con.execute('CREATE TEMP TABLE IF NOT EXISTS offered (tally_id VARCHAR)')
    con.execute('DELETE FROM offered')
    con.executemany('INSERT INTO offered VALUES (?)', [[t] for t in tallies])
    seen = {t for (t,) in con.execute(
        'SELECT o.tally_id FROM offered o JOIN tally_ledger l USING (tally_id)'
    ).fetchall()}
  added = {}
  for tally_id, counts in tallies.items():
    if tally_id in seen:
      continue
    for name, n in counts.items():
      added[name] = added.get(name, 0) + n
  new = [[t] for t in tallies if t not in seen]
  now = now or datetime.datetime.now(datetime.timezone.utc).replace(
      tzinfo=None)
  # The counters every run records, at 0 until something is counted.
  con.executemany('INSERT INTO pipeline_metrics VALUES (?, ?, 0, ?) ON '
                  'CONFLICT DO NOTHING',
                  [[run_id, name, now] for name in counters.recorded()])
  if not new or not added:
    return
  con.executemany('INSERT INTO tally_ledger VALUES (?)', new)
  con.executemany(
      'INSERT INTO pipeline_metrics VALUES (?, ?, ?, ?) ON CONFLICT (run_id, '
      'name) DO UPDATE SET value = pipeline_metrics.value + excluded.value, '
      'recorded_at = excluded.recorded_at',
      [[run_id, name, n, now] for name, n in sorted(added.items())])
  con.execute(
      "INSERT OR REPLACE INTO pipeline_metrics SELECT $run, "
      "'events_already_stored', coalesce(sum(CASE WHEN name = 'events_staged' "
      "THEN value ELSE 0 END), 0) - coalesce(sum(CASE WHEN name = "
      "'events_written' THEN value ELSE 0 END), 0), $now FROM pipeline_metrics "
      "WHERE run_id = $run AND name IN ('events_staged', 'events_written')",
      {'run': run_id, 'now': now})
