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
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms import counters

__all__ = ['TALLIES', 'Tally', 'merge_tallies']

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


def merge_tallies(tallies):
  """{tally id: counts} of tally dicts (duplicates of one id once)."""
  return {t['id']: t['counts'] for t in tallies}
