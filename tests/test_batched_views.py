"""The batched path's views, computed by Arrow, equal the per-event view
functions: `views.window_starts`, `add_event` and `view_row` over the same
events (any events, before and after 1970, in any batches; Unicode key order;
the dict rows the BigQuery sink gets)."""
import datetime

import pyarrow as pa
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas import rows, tables
from tests.helpers import sample_events
from transforms import batched_views, views
from transforms.staging import rows_to_table

SETTINGS = settings(max_examples=600, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _partials_by_the_pure_functions(events):
  result = {spec.name: {} for spec in views.VIEWS}
  for event in events:
    t = views.micros(event.event_time)
    for spec in views.VIEWS:
      table = result[spec.name]
      key = spec.key(event)
      for start in views.window_starts(t, spec.size_s, spec.period_s):
        acc = table.get((start, key))
        if acc is None:
          acc = table[(start, key)] = views.new_accumulator()
        views.add_event(acc, t, event.user_id)
  return result


NOW = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)


def _view_rows_by_the_pure_functions(events):
  """{view name: Arrow table of its rows} by `views.view_row`, sorted."""
  result = {}
  for name, accumulators in _partials_by_the_pure_functions(events).items():
    spec = {s.name: s for s in views.VIEWS}[name]
    result[name] = rows_to_table(tables.TABLES[name], [
        views.view_row(spec, start, key, acc, 'ON_TIME', NOW)
        for (start, key), acc in sorted(accumulators.items())])
  return result


def _view_rows_by_arrow(*batches):
  """{view name: its rows}: each batch's partials merged, as the combiner
  (lifted, then merged) does."""
  merge = batched_views._MergePartials()
  accumulators = {}
  for batch in batches:
    inputs = batched_views.view_inputs(batch)
    for name, partial in batched_views.partials(inputs):
      acc = accumulators.get(name, merge.create_accumulator())
      accumulators[name] = merge.add_input(acc, partial)
  specs = {s.name: s for s in views.VIEWS}
  return {name: batched_views.view_rows(
              specs[name], merge.extract_output(merge.merge_accumulators(
                  [merge.create_accumulator(), acc])), 'ON_TIME', NOW)
          for name, acc in accumulators.items()}


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3),
                          st.integers(-3 * 3600 * 10 ** 6, 3 * 3600 * 10 ** 6)),
                min_size=1, max_size=40),
       st.integers(0, 40))
def test_arrow_view_rows_equal_the_view_functions(specs, cut):
  """Any events, before or after the epoch, cut into two batches anywhere."""
  base = sample_events(3)
  events = []
  for type_index, user, offset_us in specs:
    event = base[type_index]
    events.append(event._replace(
        user_id='user-%d' % user,
        event_time=views.from_micros(offset_us + (
            1709251200 * 10 ** 6 if offset_us % 2 else 0))))
  expected = _view_rows_by_the_pure_functions(events)
  batches = [events[:cut], events[cut:]] if 0 < cut < len(events) else [events]
  got = _view_rows_by_arrow(*batches)
  assert got.keys() == expected.keys()
  for name in expected:
    assert got[name].equals(expected[name]), name


def test_arrow_view_rows_over_many_batches_are_compacted_exactly(monkeypatch):
  regrouped = []
  regroup = batched_views._regroup

  def counted(table):
    regrouped.append(table.num_rows)
    return regroup(table)
  monkeypatch.setattr(batched_views, '_regroup', counted)
  events = sample_events(60)
  expected = _view_rows_by_the_pure_functions(events)
  got = _view_rows_by_arrow(*[events[i:i + 7] for i in range(0, 60, 7)])
  # Grouped again along the way (each view once at the end, and more).
  assert len(regrouped) > len(expected)
  for name in expected:
    assert expected[name].num_rows > 0
    assert got[name].equals(expected[name]), name


def test_arrow_view_rows_of_the_events_table_equal_those_of_the_events():
  events = sample_events(40)
  from_table = batched_views.partials(rows.events_table(events, NOW))
  from_events = batched_views.partials(batched_views.view_inputs(events))
  assert [(n, t.to_pylist()) for n, t in from_table] == \
      [(n, t.to_pylist()) for n, t in from_events]


def test_windows_of_uneven_period_hold_each_time_once():
  spec = views.ViewSpec('uneven', 100, 30, lambda e: (e.tenant_id,),
                        ('tenant_id',))
  times = [-10 ** 8 - 1, -1, 0, 1, 29999999, 30000000, 10 ** 8 + 7]
  inputs = pa.table({
      'event_time': pa.array(times, pa.int64()).cast(pa.timestamp('us', 'UTC')),
      'tenant_id': ['t'] * len(times)})
  windowed = batched_views._windowed(inputs, spec)
  got = sorted(zip(windowed.column('t').to_pylist(),
                   windowed.column('window_start').to_pylist()))
  assert got == sorted((t, s) for t in times
                       for s in views.window_starts(t, 100, 30))


def test_view_rows_sort_keys_as_python_does():
  names = ['z', 'Z', 'é', 'e', '😀', 'ａ', 'a\u0301', '']
  base = sample_events(1)[0]
  events = [base._replace(tenant_id=tenant, user_id=user,
                          event_time=views.from_micros(start + 5))
            for start in (3600 * 10 ** 6, 0)
            for tenant in names[:3] for user in names]
  expected = _view_rows_by_the_pure_functions(events)
  got = _view_rows_by_arrow(events)
  for name in expected:
    assert got[name].equals(expected[name]), name


def test_view_rows_as_dicts_for_the_bigquery_sink():
  events = sample_events(20)
  spec = views.VIEWS[0]
  table = _view_rows_by_arrow(events)[spec.name]
  accumulators = _partials_by_the_pure_functions(events)[spec.name]
  assert table.to_pylist() == [
      views.view_row(spec, start, key, acc, 'ON_TIME', NOW)
      for (start, key), acc in sorted(accumulators.items())]
  empty = batched_views.view_rows(spec, pa.table({}), 'ON_TIME', NOW)
  assert empty.num_rows == 0 and empty.schema == tables.arrow_schema(
      tables.TABLES[spec.name])
