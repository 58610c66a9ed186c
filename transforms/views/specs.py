"""The three event-time views as data: their windows, keys, and row shapes.

Pure functions, no Beam: `window_starts` aligns windows to the UTC epoch, each
`ViewSpec` names its key and its accumulator, so the Beam transform
(`transforms/views/late_gate.py`), the tests and the benchmark's plain-Python job agree.
"""
import datetime
from typing import Callable, NamedTuple, Tuple

__all__ = ['ViewSpec', 'VIEWS', 'window_starts', 'micros', 'from_micros',
           'new_accumulator', 'add_event', 'merge', 'view_row']

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


class ViewSpec(NamedTuple):
  name: str
  size_s: int
  period_s: int
  key: Callable  # event -> tuple of the key columns after window_start
  key_columns: Tuple[str, ...]
  counts_users: bool = False  # its row needs the distinct users


VIEWS = (
    ViewSpec('user_activity_hourly', 3600, 3600,
             lambda e: (e.tenant_id, e.user_id), ('tenant_id', 'user_id')),
    ViewSpec('event_counts_1m', 60, 60,
             lambda e: (e.tenant_id, e.event_type), ('tenant_id', 'event_type')),
    ViewSpec('active_users_15m', 900, 300,
             lambda e: (e.tenant_id,), ('tenant_id',), counts_users=True),
)


def micros(value: datetime.datetime) -> int:
  """Microseconds since the UTC epoch (exact, unlike float timestamps)."""
  delta = value - _EPOCH
  return (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds


def from_micros(value: int) -> datetime.datetime:
  return _EPOCH + datetime.timedelta(microseconds=value)


def window_starts(event_micros: int, size_s: int, period_s: int):
  """Starts (micros) of the epoch-aligned windows [start, start+size) holding t."""
  size, period = size_s * 1000000, period_s * 1000000
  last = event_micros - event_micros % period
  return [start for start in range(last, event_micros - size, -period)]


# Accumulator of one (view, window, key): [event_count, last_event_micros, users].
def new_accumulator():
  return [0, None, set()]


def add_event(acc, event_micros, user_id):
  """Adds one event; `user_id` None when the view does not count users
  (`ViewSpec.counts_users`), so its accumulators keep no user set worth
  holding in state."""
  acc[0] += 1
  acc[1] = event_micros if acc[1] is None else max(acc[1], event_micros)
  if user_id is not None:
    acc[2].add(user_id)
  return acc


def merge(accs):
  result = new_accumulator()
  for acc in accs:
    result[0] += acc[0]
    if acc[1] is not None:
      result[1] = acc[1] if result[1] is None else max(result[1], acc[1])
    result[2] |= acc[2]
  return result


def view_row(spec: ViewSpec, window_start_us: int, key, acc, pane_timing,
             updated_at) -> dict:
  """The warehouse row of one window and key."""
  row = {'window_start': from_micros(window_start_us),
         'window_end': from_micros(window_start_us + spec.size_s * 1000000)}
  row.update(zip(spec.key_columns, key))
  if spec.name == 'user_activity_hourly':
    row['event_count'] = acc[0]
    row['last_event_time'] = from_micros(acc[1])
  elif spec.name == 'event_counts_1m':
    row['event_count'] = acc[0]
  else:
    row['active_users'] = len(acc[2])
  row['pane_timing'] = pane_timing
  row['updated_at'] = updated_at
  return row
