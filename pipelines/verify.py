"""Reconciles the warehouse with what the runs counted: the quick start's "verify
that dashboard metrics align with ingested event counts".

    python -m pipelines.verify --hot_sink duckdb:out/warehouse.duckdb --cold_path out/cold

Prints each term and each identity, and exits 1 when one does not hold:

1. records:  input records = events written + already stored + duplicates
             + dead letters (other than late_event), summed over the batch runs;
2. hot:      `events` rows = events written (runs and replays) - deleted by the
             lifecycle job;
3. cold:     distinct keys in the cold tier = events written - removed by cold
             retention, and no key twice;
4. letters:  `dead_letters` rows = dead letters written;
5. views:    every row of each view equals its recount from the stored
             events (hot and cold, each key once) that the view counts (all
             but those whose `missed_views` names it), and no window with
             such events lacks its row (contract section 4, "Exact across
             runs");
6. outbox:   no commit is waiting for the cold tier (`cold_outbox` is
             empty once a run has ended).
"""
import argparse
import glob
import os
import sys

import duckdb

from transforms.sinks.duckdb_connection import connect

__all__ = ['reconcile', 'view_mismatches', 'main', 'VIEW_VALUES']


def _sum(con, *names):
  return con.execute(
      'SELECT coalesce(sum(value), 0) FROM pipeline_metrics WHERE name IN '
      '(SELECT unnest($names))', {'names': list(names)}).fetchone()[0]


def _cold(cold_path):
  files = _cold_files(cold_path)
  if not files:
    return 0, 0
  return duckdb.connect().execute(
      'SELECT count(*), count(DISTINCT idempotency_key) FROM read_parquet($f)',
      {'f': files}).fetchone()


# The stored events each view counts, recounted: `stored` is a relation of
# `events` rows (each key once) with `missed_views`.
_RECOUNT = {
    'user_activity_hourly':
        "SELECT time_bucket(INTERVAL '1 hour', event_time, TIMESTAMP "
        "'1970-01-01') AS window_start, tenant_id, user_id, count(*) AS "
        'event_count, max(event_time) AS last_event_time FROM stored WHERE '
        "NOT list_contains(coalesce(missed_views, []), 'user_activity_hourly') "
        'GROUP BY ALL',
    'event_counts_1m':
        "SELECT time_bucket(INTERVAL '1 minute', event_time, TIMESTAMP "
        "'1970-01-01') AS window_start, tenant_id, event_type, count(*) AS "
        'event_count FROM stored WHERE NOT list_contains(coalesce('
        "missed_views, []), 'event_counts_1m') GROUP BY ALL",
    'active_users_15m':
        "SELECT time_bucket(INTERVAL '5 minutes', event_time, TIMESTAMP "
        "'1970-01-01') - to_minutes(5 * k) AS window_start, tenant_id, "
        'count(DISTINCT user_id) AS active_users FROM stored, range(3) AS '
        "r(k) WHERE NOT list_contains(coalesce(missed_views, []), "
        "'active_users_15m') GROUP BY ALL",
}
# The columns of each view a recount must give again (not its timing).
VIEW_VALUES = {
    'user_activity_hourly': ('window_start, tenant_id, user_id, event_count, '
                             'last_event_time'),
    'event_counts_1m': 'window_start, tenant_id, event_type, event_count',
    'active_users_15m': 'window_start, tenant_id, active_users',
}


def view_mismatches(con, stored_sql='SELECT * FROM events'):
  """{view: rows that differ between the view and its recount from the
  stored events (`stored_sql`: `events` rows, each key once), both ways}."""
  con.execute('CREATE OR REPLACE TEMP VIEW stored AS ' + stored_sql)
  found = {}
  for view, recount in _RECOUNT.items():
    values = VIEW_VALUES[view]
    found[view] = con.execute(
        'SELECT count(*) FROM ((SELECT %s FROM %s EXCEPT ALL SELECT %s FROM '
        '(%s)) UNION ALL (SELECT %s FROM (%s) EXCEPT ALL SELECT %s FROM %s))'
        % (values, view, values, recount, values, recount, values, view)
    ).fetchone()[0]
  return found


def _stored_sql(cold_path):
  """Every stored event once: the hot `events` rows, and the cold tier's
  rows of the keys the lifecycle job moved out of hot."""
  files = _cold_files(cold_path)
  if not files:
    return 'SELECT * FROM events'
  return ("SELECT * FROM events UNION ALL BY NAME SELECT * FROM (SELECT * "
          "FROM read_parquet(%s, union_by_name = true) c WHERE NOT EXISTS "
          "(SELECT 1 FROM events e WHERE e.idempotency_key = "
          "c.idempotency_key) QUALIFY row_number() OVER (PARTITION BY "
          "idempotency_key) = 1)" % files)


def _cold_files(cold_path):
  return sorted(glob.glob(os.path.join(cold_path, 'events', 'ingest_date=*',
                                       'tenant_id=*', '*.parquet')))


def reconcile(db_path, cold_path):
  """[(name, left terms, right terms, holds)] for the identities."""
  con = connect(db_path)
  try:
    written_runs = _sum(con, 'events_written')
    written = written_runs + _sum(con, 'replay_events_written')
    terms = {
        'input_records': _sum(con, 'input_records'),
        'events_written': written_runs,
        'events_already_stored': _sum(con, 'events_already_stored'),
        'duplicates': _sum(con, 'duplicates'),
        'dead_letters': _sum(con, 'dead_letters'),
        'replay_events_written': _sum(con, 'replay_events_written'),
        'lifecycle_deleted_from_hot': _sum(con, 'lifecycle_deleted_from_hot'),
        'lifecycle_removed_from_cold': _sum(con, 'lifecycle_removed_from_cold'),
        'dead_letters_written': _sum(con, 'dead_letters_written'),
        'hot_events': con.execute('SELECT count(*) FROM events').fetchone()[0],
        'dead_letter_rows': con.execute(
            'SELECT count(*) FROM dead_letters').fetchone()[0],
        'outbox_rows': con.execute(
            'SELECT count(*) FROM cold_outbox').fetchone()[0],
    }
    mismatches = view_mismatches(con, _stored_sql(cold_path))
  finally:
    con.close()
  cold_rows, cold_keys = _cold(cold_path)
  terms.update(cold_rows=cold_rows, cold_keys=cold_keys)
  t = terms
  checks = [
      ('records', t['input_records'],
       t['events_written'] + t['events_already_stored'] + t['duplicates']
       + t['dead_letters'],
       'input_records = events_written + events_already_stored + duplicates '
       '+ dead_letters'),
      ('hot', t['hot_events'], written - t['lifecycle_deleted_from_hot'],
       'hot_events = events_written + replay_events_written - '
       'lifecycle_deleted_from_hot'),
      ('cold', t['cold_keys'], written - t['lifecycle_removed_from_cold'],
       'cold_keys = events_written + replay_events_written - '
       'lifecycle_removed_from_cold'),
      ('cold rows', t['cold_rows'], t['cold_keys'], 'cold_rows = cold_keys'),
      ('letters', t['dead_letter_rows'], t['dead_letters_written'],
       'dead_letter_rows = dead_letters_written'),
      ('outbox', t['outbox_rows'], 0, 'outbox_rows = 0'),
  ]
  for view, differing in sorted(mismatches.items()):
    terms['%s_rows_differing' % view] = differing
    checks.append((view, differing, 0, '%s rows differing from the recount of '
                   'the stored events = 0' % view))
  return terms, checks


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--hot_sink', required=True)
  parser.add_argument('--cold_path', required=True)
  args = parser.parse_args(argv)
  kind, _, db_path = args.hot_sink.partition(':')
  if kind != 'duckdb' or not os.path.exists(db_path):
    parser.error('--hot_sink: expected duckdb:PATH of an existing warehouse')
  terms, checks = reconcile(db_path, args.cold_path)
  for name, value in terms.items():
    print('%-28s %d' % (name, value))
  failed = 0
  for name, left, right, formula in checks:
    holds = left == right
    failed += not holds
    print('%-4s %-10s %d %s %d   (%s)' % ('ok' if holds else 'FAIL', name, left,
                                          '=' if holds else '!=', right, formula))
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  main()
