"""The views on the batched path: partial aggregates per batch, merged.

Per batch of events, `_partials` builds each view's {(window_start, key):
accumulator} with the same windows and accumulators as `views.py` (a test
compares them); a combiner keyed by view name merges them, and the merged
table becomes rows: a list of row dicts, or one Arrow table per view for the
DuckDB sink (`views.view_table`). Bounded input only: every pane is ON_TIME.
"""
import datetime
from typing import Tuple

import apache_beam as beam
import pyarrow as pa

from transforms.batch import Batch, BatchCoder
from transforms.views import VIEWS, micros, view_row, view_table

__all__ = ['BatchedViews']


def _partials(events):
  """Per view: {(window_start, key): accumulator} of one batch.

  `views.window_starts` and `views.add_event` written out inline (the same
  windows and accumulators; a test compares them): this loop runs three or
  more times per event and was a tenth of a run. Only a view whose row counts
  distinct users (`counts_users`) keeps them; the others keep None: with many
  users a set per (window, user) was most of the views' time and memory.
  """
  result = {spec.name: {} for spec in VIEWS}
  plans = [(result[spec.name], spec.key, spec.size_s * 1000000,
            spec.period_s * 1000000, spec.counts_users) for spec in VIEWS]
  for event in events:
    t = micros(event.event_time)
    user = event.user_id
    for table, key_of, size, period, counts_users in plans:
      key = key_of(event)
      start, end = t - t % period, t - size
      while start > end:
        acc = table.get((start, key))
        if acc is None:
          table[(start, key)] = [1, t, {user} if counts_users else None]
        else:
          acc[0] += 1
          if t > acc[1]:
            acc[1] = t
          if counts_users:
            acc[2].add(user)
        start -= period
  return [(name, Batch([table])) for name, table in result.items()]


def _merged(mine, other):
  """Two batched accumulators as one (users are None where a view needs none)."""
  users = mine[2] | other[2] if mine[2] is not None else None
  return [mine[0] + other[0], max(mine[1], other[1]), users]


class _MergePartials(beam.CombineFn):
  """Merges per-batch partials; accumulators travel as one `Batch` (one pickle)."""

  def create_accumulator(self):
    return Batch([{}])

  def get_accumulator_coder(self):
    return BatchCoder()

  def add_input(self, acc, partial):
    return self.merge_accumulators([acc, partial])

  def merge_accumulators(self, accumulators):
    tables = [a.items[0] for a in accumulators]
    result = tables[0]
    for other in tables[1:]:
      for k, acc in other.items():
        mine = result.get(k)
        result[k] = acc if mine is None else _merged(mine, acc)
    return Batch([result])

  def extract_output(self, acc):
    return acc.items[0]


class BatchedViews(beam.PTransform):
  """Lists of events in; {view name: PCollection of view rows} out: lists of
  row dicts, or with `arrow` one Arrow table per view (the DuckDB sink)."""

  def __init__(self, arrow=False):
    super().__init__()
    self._arrow = arrow

  def expand(self, batches):
    merged = (batches
              | 'Partials' >> beam.FlatMap(_partials).with_output_types(
                  Tuple[str, Batch])
              | 'Merge' >> beam.CombinePerKey(_MergePartials()))
    specs = {spec.name: spec for spec in VIEWS}
    arrow = self._arrow

    def rows(name_and_table):
      name, table = name_and_table
      now = datetime.datetime.now(datetime.timezone.utc)
      spec = specs[name]
      if arrow:
        return name, view_table(spec, table, 'ON_TIME', now)
      return name, Batch([view_row(spec, start, key, acc, 'ON_TIME', now)
                          for (start, key), acc in sorted(table.items())])
    kind = pa.Table if arrow else Batch
    named = merged | 'Rows' >> beam.Map(rows).with_output_types(
        Tuple[str, kind])
    return {name: named
            | 'Only%s' % name >> beam.Filter(lambda kv, n=name: kv[0] == n)
            | 'Values%s' % name >> beam.Map(
                lambda kv: kv[1]).with_output_types(kind)
            for name in specs}
