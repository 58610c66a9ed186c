"""The views, maintained by the hot sink's commit from the rows it newly stored.

Why at the commit: a run only knows its own input, while a window's events
may come in several runs (hourly loads, overlapping backfills, replays, a
stream restarted without its state, two jobs at once). The commit is the one
place that knows which events are stored for the first time: in the same
transaction that inserts them into `events` (the temp table `fresh`), it adds
them to the views, so every view row is the aggregate of the stored events it
counts, whatever the history (contract section 4, "Exact across runs"):

* `user_activity_hourly`, `event_counts_1m`: counts added, the newest event
  time kept (the greater);
* `active_users_15m`: the user sets live in `active_user_periods` (one row
  per tenant, 5-minute period and user); each window touched is recounted
  from its three periods, so a user is counted once however many runs saw
  them.

A view does not count an event whose `missed_views` names it (the late-data
gate found it too late for that view; its `late_event` letter says so).

`pane_timing` follows Beam's panes: a bounded run's commit runs when its
watermark has passed every window, so what it writes is `ON_TIME`; a
streaming commit writes `EARLY` rows for windows the watermark has not passed
(as far as the gate's timers have told it: `floor`), and a row changed after
its window was final becomes `LATE`. Early rows whose window the watermark
has passed are marked `ON_TIME` by the next commit (`finalize`).

Both dialects (DuckDB, BigQuery) are written here side by side.
"""
from schemas import tables
from transforms.views.specs import VIEWS

__all__ = ['duckdb_view_statements', 'bigquery_view_statements',
           'PERIOD_S']

PERIOD_S = 300  # the sliding view's period: the unit of its user sets
_SPECS = {spec.name: spec for spec in VIEWS}


def _window_start_duckdb(size_s, column='event_time'):
  return ("time_bucket(INTERVAL '%d seconds', %s, TIMESTAMP '1970-01-01')"
          % (size_s, column))


def _window_start_bigquery(size_s, column='event_time'):
  return ('TIMESTAMP_SECONDS(DIV(UNIX_SECONDS(%s), %d) * %d)'
          % (column, size_s, size_s))


def _counts(view, dialect):
  """SELECT of one count view's additions from `fresh`."""
  spec = _SPECS[view]
  start = (_window_start_duckdb if dialect == 'duckdb'
           else _window_start_bigquery)(spec.size_s)
  keys = ', '.join(spec.key_columns)
  last = ', max(event_time) AS last_event_time' if view == \
      'user_activity_hourly' else ''
  counted = ("NOT list_contains(missed_views, '%s')" % view
             if dialect == 'duckdb' else
             "'%s' NOT IN UNNEST(missed_views)" % view)
  return ('SELECT %s AS window_start, %s, count(*) AS event_count%s FROM fresh '
          'WHERE %s GROUP BY 1, %s' % (start, keys, last, counted, keys))


def _new_timing_duckdb(size_s, streaming):
  if not streaming:
    return "'ON_TIME'"
  return ("CASE WHEN epoch_us(window_start) + %d <= $floor THEN 'LATE' "
          "ELSE 'EARLY' END" % (size_s * 1000000))


def duckdb_view_statements(streaming: bool):
  """The statements the commit runs in its transaction once `fresh` is
  made; parameters `$now` (and `$floor`, micros, in streaming)."""
  out = []
  for view in ('user_activity_hourly', 'event_counts_1m'):
    table = tables.TABLES[view]
    spec = _SPECS[view]
    timing = _new_timing_duckdb(spec.size_s, streaming)
    last = ', last_event_time' if view == 'user_activity_hourly' else ''
    keys = ', '.join(spec.key_columns)
    updates = ['event_count = %s.event_count + excluded.event_count' % view]
    if view == 'user_activity_hourly':
      updates.append('last_event_time = greatest(%s.last_event_time, '
                     'excluded.last_event_time)' % view)
    updates += ["pane_timing = CASE WHEN %s.pane_timing <> 'EARLY' THEN 'LATE' "
                'ELSE excluded.pane_timing END' % view,
                'updated_at = excluded.updated_at']
    out.append(
        'INSERT INTO %s (%s) SELECT window_start, window_start + INTERVAL '
        "'%d seconds', %s, event_count%s, %s, $now FROM (%s) "
        'ON CONFLICT (%s) DO UPDATE SET %s' % (
            view, ', '.join(table.column_names), spec.size_s, keys, last,
            timing, _counts(view, 'duckdb'),
            ', '.join(table.key), ', '.join(updates)))
  spec = _SPECS['active_users_15m']
  out.append(
      'CREATE TEMP TABLE new_periods AS SELECT DISTINCT %s AS period_start, '
      "tenant_id, user_id FROM fresh WHERE NOT list_contains(missed_views, "
      "'active_users_15m')" % _window_start_duckdb(PERIOD_S))
  out.append('INSERT INTO active_user_periods SELECT period_start, tenant_id, '
             'user_id FROM new_periods ON CONFLICT DO NOTHING')
  windows = spec.size_s // PERIOD_S
  out.append(
      'CREATE TEMP TABLE touched AS SELECT DISTINCT period_start - '
      "to_seconds(%d * k) AS window_start, tenant_id FROM (SELECT DISTINCT "
      'period_start, tenant_id FROM new_periods), range(%d) AS r(k)' % (
          PERIOD_S, windows))
  # Each touched window's users: the periods it spans (equi-joins only, so
  # DuckDB hashes them), each member placed in its windows, those touched
  # kept.
  out.append(
      'INSERT INTO active_users_15m (%s) WITH needed AS (SELECT DISTINCT '
      'tenant_id, window_start + to_seconds(%d * k) AS period_start FROM '
      'touched, range(%d) AS r(k)), members AS (SELECT a.tenant_id, '
      'a.period_start, a.user_id FROM active_user_periods a JOIN needed USING '
      '(tenant_id, period_start)), placed AS (SELECT tenant_id, period_start - '
      'to_seconds(%d * k) AS window_start, user_id FROM members, range(%d) AS '
      'r(k)) SELECT window_start, window_start + INTERVAL \'%d seconds\', '
      'tenant_id, count(DISTINCT user_id), %s, $now FROM placed JOIN touched '
      'USING (tenant_id, window_start) GROUP BY window_start, tenant_id '
      'ON CONFLICT (window_start, tenant_id) DO UPDATE SET active_users = '
      "excluded.active_users, pane_timing = CASE WHEN active_users_15m."
      "pane_timing <> 'EARLY' THEN 'LATE' ELSE excluded.pane_timing END, "
      'updated_at = excluded.updated_at' % (
          ', '.join(tables.ACTIVE_USERS_15M.column_names), PERIOD_S, windows,
          PERIOD_S, windows, spec.size_s,
          _new_timing_duckdb(spec.size_s, streaming)))
  if streaming:
    out += duckdb_finalize()
  return out


def duckdb_finalize():
  """Early rows whose window the watermark (`$floor`) passed become final."""
  return ["UPDATE %s SET pane_timing = 'ON_TIME' WHERE pane_timing = 'EARLY' "
          'AND epoch_us(window_end) <= $floor' % t.name
          for t in tables.VIEW_TABLES]


def _new_timing_bigquery(size_s, streaming, start='window_start'):
  if not streaming:
    return "'ON_TIME'"
  return ("IF(UNIX_MICROS(%s) + %d <= @floor, 'LATE', 'EARLY')"
          % (start, size_s * 1000000))


def _upsert_bigquery(target, table, source_sql, value_sql, timing_sql):
  """DELETE + INSERT of the rows a commit changes (BigQuery runs no MERGE
  inside a multi-statement transaction on every backend; this runs on all):
  `source_sql` gives the new key columns and values, merged with the stored
  row by `value_sql` (column expressions over S (new) and T (stored))."""
  keys = table.key
  on = ' AND '.join('T.%s = S.%s' % (k, k) for k in keys)
  stage = 'changed_%s' % table.name
  cols = [c for c in table.column_names if c not in ('pane_timing',
                                                     'updated_at')]
  select = ', '.join(value_sql.get(c, 'S.%s' % c) + ' AS ' + c for c in cols)
  return [
      'CREATE TEMP TABLE %s AS SELECT %s, IF(T.pane_timing IS NOT NULL AND '
      "T.pane_timing <> 'EARLY', 'LATE', %s) AS pane_timing, @now AS "
      'updated_at FROM (%s) S LEFT JOIN `%s` T ON %s' % (
          stage, select, timing_sql, source_sql, target, on),
      'DELETE FROM `%s` T WHERE EXISTS (SELECT 1 FROM %s S WHERE %s)' % (
          target, stage, on),
      'INSERT INTO `%s` (%s) SELECT %s FROM %s' % (
          target, ', '.join(table.column_names), ', '.join(table.column_names),
          stage),
  ]


def bigquery_view_statements(prefix: str, streaming: bool):
  """The same as `duckdb_view_statements` in BigQuery's dialect, for a
  multi-statement transaction; `prefix` is `project.dataset`; parameters
  `@now` (and `@floor` in streaming)."""
  out = []
  for view in ('user_activity_hourly', 'event_counts_1m'):
    table = tables.TABLES[view]
    spec = _SPECS[view]
    source = ('SELECT window_start, TIMESTAMP_ADD(window_start, INTERVAL %d '
              'SECOND) AS window_end, * EXCEPT (window_start) FROM (%s)' % (
                  spec.size_s, _counts(view, 'bigquery')))
    values = {'event_count': 'COALESCE(T.event_count, 0) + S.event_count'}
    if view == 'user_activity_hourly':
      values['last_event_time'] = ('IF(T.last_event_time IS NULL OR '
                                   'S.last_event_time > T.last_event_time, '
                                   'S.last_event_time, T.last_event_time)')
    out += _upsert_bigquery('%s.%s' % (prefix, view), table, source, values,
                            _new_timing_bigquery(spec.size_s, streaming,
                                                 'S.window_start'))
  spec = _SPECS['active_users_15m']
  windows = spec.size_s // PERIOD_S
  periods = '`%s.active_user_periods`' % prefix
  out.append(
      'CREATE TEMP TABLE new_periods AS SELECT DISTINCT %s AS period_start, '
      "tenant_id, user_id FROM fresh WHERE 'active_users_15m' NOT IN "
      'UNNEST(missed_views)' % _window_start_bigquery(PERIOD_S))
  out.append(
      'INSERT INTO %s (period_start, tenant_id, user_id) SELECT N.period_start, '
      'N.tenant_id, N.user_id FROM new_periods N WHERE NOT EXISTS (SELECT 1 '
      'FROM %s A WHERE A.period_start = N.period_start AND A.tenant_id = '
      'N.tenant_id AND A.user_id = N.user_id)' % (periods, periods))
  source = (
      'SELECT t.window_start, TIMESTAMP_ADD(t.window_start, INTERVAL %d SECOND) '
      'AS window_end, t.tenant_id, COUNT(DISTINCT a.user_id) AS active_users '
      'FROM (SELECT DISTINCT TIMESTAMP_SUB(period_start, INTERVAL %d * k '
      'SECOND) AS window_start, tenant_id FROM (SELECT DISTINCT period_start, '
      'tenant_id FROM new_periods), UNNEST(GENERATE_ARRAY(0, %d)) AS k) t '
      'CROSS JOIN UNNEST(GENERATE_ARRAY(0, %d)) AS j JOIN %s a ON a.tenant_id '
      '= t.tenant_id AND a.period_start = TIMESTAMP_ADD(t.window_start, '
      'INTERVAL %d * j SECOND) GROUP BY t.window_start, t.tenant_id' % (
          spec.size_s, PERIOD_S, windows - 1, windows - 1, periods, PERIOD_S))
  out += _upsert_bigquery('%s.active_users_15m' % prefix,
                          tables.ACTIVE_USERS_15M, source, {},
                          _new_timing_bigquery(spec.size_s, streaming,
                                               'S.window_start'))
  if streaming:
    out += ["UPDATE `%s.%s` SET pane_timing = 'ON_TIME' WHERE pane_timing = "
            "'EARLY' AND UNIX_MICROS(window_end) <= @floor" % (prefix, t.name)
            for t in tables.VIEW_TABLES]
  return out
