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
4. letters:  `dead_letters` rows = dead letters written.

Streaming runs on the local runner write no counters (see the README), so this
reconciles warehouses filled by batch runs.
"""
import argparse
import glob
import os
import sys

import duckdb

from transforms.duckdb_sink import connect

__all__ = ['reconcile', 'main']


def _sum(con, *names):
  return con.execute(
      'SELECT coalesce(sum(value), 0) FROM pipeline_metrics WHERE name IN '
      '(SELECT unnest($names))', {'names': list(names)}).fetchone()[0]


def _cold(cold_path):
  files = glob.glob(os.path.join(cold_path, 'events', 'ingest_date=*',
                                 'tenant_id=*', '*.parquet'))
  if not files:
    return 0, 0
  return duckdb.connect().execute(
      'SELECT count(*), count(DISTINCT idempotency_key) FROM read_parquet($f)',
      {'f': files}).fetchone()


def reconcile(db_path, cold_path):
  """[(name, left terms, right terms, holds)] for the four identities."""
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
    }
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
  ]
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
