"""The views on the batched path, computed by Arrow: partials per batch, merged.

The views read four columns of each batch (event time, tenant, user, event
type): the batch's Arrow `events` table where the sink has one, else built
from the events (`view_inputs`). Per batch and view, `partials` puts each row
in its epoch-aligned windows (the windows of `views.window_starts`) and
groups by window and key with Arrow's hash aggregation: event count and
latest event time per (window, key). A view that counts distinct users
(`counts_users`) keeps one row per (start, key, user); when its windows are
whole periods (size a multiple of the period: `active_users_15m`) the start
is the period's, not each window's (every event of a period lies in the
same windows), which is a third of the rows, expanded to windows only at
the end. A combiner keyed by view name concatenates the partials and groups
them again now and then (`_MergePartials`); the merged table becomes the
view's rows (`view_rows`), one Arrow table sorted by window and key, or row
dicts for the BigQuery sink.
The same rows as `views.view_row` over the per-event accumulators (a test
compares them). Bounded input only: every pane is ON_TIME.

Vectorised because the per-event loop it replaced (three views, up to three
windows each, a dict lookup per window) was a tenth of a run.
"""
import datetime
import math
from typing import Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from schemas import tables
from transforms.batch import ArrowTableCoder, Batch
from transforms.views import VIEWS

__all__ = ['BatchedViews', 'view_inputs', 'partials', 'view_rows']

_INPUT_COLUMNS = ('event_time', 'tenant_id', 'user_id', 'event_type')
# The same fields as the `events` table's, which the DuckDB path passes in.
_INPUT_SCHEMA = pa.schema([tables.arrow_schema(tables.EVENTS).field(name)
                           for name in _INPUT_COLUMNS])


def view_inputs(events) -> pa.Table:
  """The columns the views read, from a batch of `Event`s."""
  events = list(events)
  return pa.Table.from_arrays(
      [pa.array([getattr(e, name) for e in events], type=field.type)
       for name, field in zip(_INPUT_COLUMNS, _INPUT_SCHEMA)],
      schema=_INPUT_SCHEMA)


def _floor(values, step):
  """`values - values % step` with Python's floor (Arrow's division truncates
  towards zero, which differs for times before 1970)."""
  start = pc.multiply(pc.divide(values, step), step)
  return pc.if_else(pc.greater(start, values), pc.subtract(start, step), start)


def _group_columns(spec):
  return ('window_start',) + spec.key_columns + (
      ('user_id',) if spec.counts_users else ())


def _whole_periods(spec):
  """Every event of one period lies in the same windows of `spec`."""
  return spec.size_s % spec.period_s == 0


def _windowed(inputs, spec, windows=None):
  """One row per (row of `inputs`, window of `spec` holding its time), with
  `windows=1` only the latest (the start of the period holding it)."""
  size, period = spec.size_s * 1000000, spec.period_s * 1000000
  t = inputs.column('event_time').cast(pa.int64())
  last = _floor(t, period)
  earliest_excluded = pc.subtract(t, size)
  columns = {name: inputs.column(name) for name in _group_columns(spec)[1:]}
  pieces = []
  for k in range(windows or math.ceil(size / period)):
    start = pc.subtract(last, k * period)
    piece = pa.table(dict(columns, window_start=start, t=t))
    if size % period:  # windows overlap unevenly: not every k holds every t
      piece = piece.filter(pc.greater(start, earliest_excluded))
    pieces.append(piece)
  return pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]


def _aggregate(table, keys, aggregations):
  """`table` grouped by `keys`; `aggregations` maps each output column to the
  (input column, Arrow aggregate function) that makes it."""
  grouped = table.group_by(list(keys), use_threads=False).aggregate(
      list(aggregations.values()))
  names = {'%s_%s' % made_by: name for name, made_by in aggregations.items()}
  return grouped.rename_columns([names.get(c, c) for c in grouped.column_names])


# What a partial keeps per group, from the windowed rows and from partials.
_FROM_ROWS = {'count': ('t', 'count'), 'last': ('t', 'max')}
_FROM_PARTIALS = {'count': ('count', 'sum'), 'last': ('last', 'max')}


def partials(inputs: pa.Table):
  """(view name, partial table) per view for one batch: columns the view's
  group keys, and `count` (events) and `last` (latest event time, micros);
  for a view counting users the distinct (start, key, user) rows alone."""
  result = []
  for spec in VIEWS:
    keys = _group_columns(spec)
    if spec.counts_users:
      windows = 1 if _whole_periods(spec) else None
      partial = _aggregate(_windowed(inputs, spec, windows), keys, {})
    else:
      partial = _aggregate(_windowed(inputs, spec), keys, _FROM_ROWS)
    result.append((spec.name, partial))
  return result


def _regroup(table):
  """Partials of many batches (one view) as one partial table, one chunk
  (Arrow's grouping returns several, which would count as batches)."""
  keys = [c for c in table.column_names if c not in _FROM_PARTIALS]
  made = {name: how for name, how in _FROM_PARTIALS.items()
          if name in table.column_names}
  return _aggregate(table, keys, made).combine_chunks()


def _periods_to_windows(table, spec):
  """Rows keyed by the start of their period, once per window holding it."""
  period = spec.period_s * 1000000
  at = table.column_names.index('window_start')
  starts = table.column(at)
  return pa.concat_tables([
      table.set_column(at, 'window_start', pc.subtract(starts, k * period))
      for k in range(spec.size_s // spec.period_s)])


class _MergePartials(beam.CombineFn):
  """Concatenates one view's partial tables; groups them again whenever
  their new rows outnumber the grouped ones. The accumulator is one Arrow
  table (a table with no columns before the first partial)."""

  def create_accumulator(self):
    return pa.table({})

  def get_accumulator_coder(self):
    return ArrowTableCoder()

  def add_input(self, acc, partial):
    return self.merge_accumulators([acc, partial])

  def merge_accumulators(self, accumulators):
    tables = [t for t in accumulators if t.num_columns]
    if not tables:
      return pa.table({})
    merged = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    chunks = merged.column(0).chunks
    # Grouped again when the partials added since the last grouping (every
    # chunk after the first) outnumber its rows: each row is grouped again a
    # few times at most, however many batches come. (Grouping every N
    # batches instead regrouped a view of millions of rows, which distinct
    # users do not shrink, again and again: 13 s of a 2,000,000-event soak.)
    if len(chunks) > 1 and merged.num_rows > 2 * len(chunks[0]):
      merged = _regroup(merged)
    return merged

  def extract_output(self, acc):
    return _regroup(acc) if acc.num_columns else acc


def view_rows(spec, merged: pa.Table, pane_timing, updated_at) -> pa.Table:
  """The view's rows (its table's Arrow schema) from its merged partials,
  sorted by window and key."""
  schema = tables.arrow_schema(tables.TABLES[spec.name])
  keys = ('window_start',) + spec.key_columns
  if not merged.num_columns or not merged.num_rows:
    return schema.empty_table()
  if spec.counts_users:  # distinct (start, key, user) rows: count users
    if _whole_periods(spec):
      merged = _periods_to_windows(merged, spec)
    merged = _aggregate(merged, keys, {'users': ('user_id', 'count_distinct')})
  merged = merged.sort_by([(name, 'ascending') for name in keys])
  starts = merged.column('window_start')
  n = merged.num_rows
  values = {
      'window_start': starts,
      'window_end': pc.add(starts, spec.size_s * 1000000),
      'pane_timing': pa.array([pane_timing] * n, pa.string()),
      'updated_at': pa.array([updated_at] * n, pa.timestamp('us', tz='UTC')),
  }
  values.update({name: merged.column(name) for name in spec.key_columns})
  for column, made_from in (('event_count', 'count'), ('last_event_time', 'last'),
                            ('active_users', 'users')):
    if made_from in merged.column_names:
      values[column] = merged.column(made_from)
  return pa.Table.from_arrays(
      [values[f.name].cast(f.type) for f in schema], schema=schema)


class BatchedViews(beam.PTransform):
  """Batches in (Arrow tables with the `events` columns the views read, or
  `Batch`es of events); {view name: PCollection of view rows} out: one Arrow
  table per view, or with `arrow=False` a `Batch` of row dicts."""

  def __init__(self, arrow=False):
    super().__init__()
    self._arrow = arrow

  def expand(self, batches):
    def to_partials(batch):
      inputs = batch if isinstance(batch, pa.Table) else view_inputs(batch)
      return partials(inputs)
    merged = (batches
              | 'Partials' >> beam.FlatMap(to_partials).with_output_types(
                  Tuple[str, pa.Table])
              | 'Merge' >> beam.CombinePerKey(_MergePartials()))
    specs = {spec.name: spec for spec in VIEWS}
    arrow = self._arrow

    def rows(name_and_table):
      name, table = name_and_table
      now = datetime.datetime.now(datetime.timezone.utc)
      result = view_rows(specs[name], table, 'ON_TIME', now)
      return name, result if arrow else Batch(result.to_pylist())
    kind = pa.Table if arrow else Batch
    named = merged | 'Rows' >> beam.Map(rows).with_output_types(
        Tuple[str, kind])
    return {name: named
            | 'Only%s' % name >> beam.Filter(lambda kv, n=name: kv[0] == n)
            | 'Values%s' % name >> beam.Map(
                lambda kv: kv[1]).with_output_types(kind)
            for name in specs}
