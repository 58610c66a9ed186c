"""Tiered, tenant-scoped queries: the routing and merging behind each endpoint.

Tier routing for events: the hot tier keeps `hot_retention_days` of event time
(the lifecycle job moves older events to cold and deletes them from hot), and
the cold tier holds every event. A range is split at the boundary (now minus
the retention): the part after it is read from hot, the part before from cold,
so no row is read twice; rows are still merged by `idempotency_key` (hot wins)
in case a tier holds both copies around the boundary.
"""
import datetime
from typing import List, NamedTuple, Optional

from serving.backends import DERIVED

__all__ = ['Answer', 'view_rows', 'event_rows', 'event_by_key', 'newest_window',
           'MAX_LIMIT']

MAX_LIMIT = 10000


class Answer(NamedTuple):
  rows: List[dict]
  tiers: List[str]
  truncated: bool


def _tenant_filter(exposure, caller, backend, params):
  if caller.is_admin:
    return ''
  params['tenant'] = caller.tenant_id
  return ' AND %s = %s' % (exposure.tenant_column, backend.param('tenant'))


def view_rows(backend, exposure, caller, start, end, limit) -> Answer:
  params = {'start': start, 'end': end, 'limit': limit + 1}
  time = exposure.time_column
  sql = ('SELECT * FROM %s WHERE %s >= %s AND %s < %s%s ORDER BY %s, %s '
         'LIMIT %s' % (
             backend.relation(exposure.name), time, backend.param('start'), time,
             backend.param('end'),
             _tenant_filter(exposure, caller, backend, params), time,
             exposure.tenant_column, backend.param('limit')))
  rows = backend.query(sql, params)
  return Answer(rows[:limit], ['hot'], len(rows) > limit)


def newest_window(backend, exposure, caller) -> Optional[datetime.datetime]:
  """The newest window whose pane is final (not an early, speculative one)."""
  params = {}
  final = '' if exposure.name in DERIVED else " AND pane_timing <> 'EARLY'"
  sql = 'SELECT max(%s) AS newest FROM %s WHERE TRUE%s%s' % (
      exposure.time_column, backend.relation(exposure.name), final,
      _tenant_filter(exposure, caller, backend, params))
  rows = backend.query(sql, params)
  return rows[0]['newest'] if rows else None


def _hot_events(hot, exposure, caller, start, end, limit):
  params = {'start': start, 'end': end, 'limit': limit}
  sql = ('SELECT * FROM %s WHERE event_time >= %s AND event_time < %s%s '
         'ORDER BY event_time, idempotency_key LIMIT %s' % (
             hot.relation('events'), hot.param('start'), hot.param('end'),
             _tenant_filter(exposure, caller, hot, params), hot.param('limit')))
  return hot.query(sql, params)


def _cold_events(cold, exposure, caller, where, params, limit):
  if not caller.is_admin:
    where += ' AND tenant_id = $tenant'
    params = dict(params, tenant=caller.tenant_id)
  return cold.events(where, params, None if caller.is_admin else
                     caller.tenant_id, limit)


def event_rows(hot, cold, exposure, caller, start, end, limit,
               boundary) -> Answer:
  tiers, by_key = [], {}
  if 'cold' in exposure.tiers and cold is not None and start < boundary:
    tiers.append('cold')
    for row in _cold_events(cold, exposure, caller,
                            'event_time >= $start AND event_time < $end',
                            {'start': start, 'end': min(end, boundary)},
                            limit + 1):
      by_key[row['idempotency_key']] = row
  if 'hot' in exposure.tiers and end > boundary:
    tiers.append('hot')
    for row in _hot_events(hot, exposure, caller, max(start, boundary), end,
                           limit + 1):
      by_key[row['idempotency_key']] = row  # hot wins
  rows = sorted(by_key.values(),
                key=lambda r: (r['event_time'], r['idempotency_key']))
  return Answer(rows[:limit], tiers, len(rows) > limit)


def event_by_key(hot, cold, exposure, caller, key) -> Answer:
  """Read-after-write against the hot tier; an event moved out of it by the
  lifecycle job is found in the cold tier."""
  params = {'key': key}
  sql = 'SELECT * FROM %s WHERE idempotency_key = %s%s' % (
      hot.relation('events'), hot.param('key'),
      _tenant_filter(exposure, caller, hot, params))
  rows = hot.query(sql, params)
  if rows or cold is None or 'cold' not in exposure.tiers:
    return Answer(rows, ['hot'], False)
  return Answer(_cold_events(cold, exposure, caller, 'idempotency_key = $key',
                             {'key': key}, 1), ['hot', 'cold'], False)
