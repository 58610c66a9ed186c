"""The hot-to-cold lifecycle job.

    python -m pipelines.lifecycle --hot_sink duckdb:out/warehouse.duckdb \\
        --cold_path out/cold --hot_retention_days 7 [--cold_retention_days 365]

Rows a killed run's commit left in the cold tier's outbox are exported first.
Hot `events` whose `event_time` is older than the hot retention are written to
the cold tier where they are not there already (the pipeline writes every event
to both tiers, so normally none is missing), then deleted from hot, in one
transaction after the cold files exist. Cold partitions whose `ingest_date` is
older than the cold retention are removed. Staging a killed run left behind
(the hot sink's `<warehouse>.staging/<table>/` files, the cold tier's
`<cold_path>/.staging/<run>/` pieces) is removed once its folder has been idle
for `--staging_idle_hours` (a running job writes there continually, a finished
one removes its own). Running it twice changes nothing the second time. What it
deletes is recorded in `pipeline_metrics` (`lifecycle_deleted_from_hot`,
`lifecycle_removed_from_cold`), so `pipelines.verify` can still reconcile.
"""
import argparse
import datetime
import glob
import os
import shutil
import time
import uuid

from pipelines.summary import record_failure, run_outcome, write_metrics
from schemas import tables
from schemas.keys import key_shard
from transforms.sinks.cold_sink import (cold_file_path, keys_digest, partition_of,
                                  write_cold_file)
from transforms.sinks.cold_sink import export_outbox
from transforms.sinks.duckdb_connection import connect, staging_dir_of
from transforms.sinks.duckdb_sink import drain_outbox, read_outbox
from transforms.sinks.staging import rows_to_table
from transforms.ingest.timestamps import parse_rfc3339

__all__ = ['run', 'main']

_UTC = datetime.timezone.utc


def _cold_glob(cold_path):
  return os.path.join(cold_path, 'events', 'ingest_date=*', 'tenant_id=*',
                      '*.parquet')


def _keys_in_cold(con, cold_path):
  files = sorted(glob.glob(_cold_glob(cold_path)))  # never hidden temp files
  if not files:
    return set()
  return {row[0] for row in con.execute(
      'SELECT DISTINCT c.idempotency_key FROM read_parquet($files) c '
      'JOIN old_keys o ON c.idempotency_key = o.k', {'files': files}).fetchall()}


def _write_missing(cold_path, rows):
  groups = {}
  for row in rows:
    row['ingested_at'] = row['ingested_at'].replace(tzinfo=_UTC)
    for column in ('event_time', 'processed_at'):
      row[column] = row[column].replace(tzinfo=_UTC)
    groups.setdefault(partition_of(row), []).append(row)
  for (ingest_date, tenant_id), part in sorted(groups.items()):
    part.sort(key=lambda r: r['idempotency_key'])
    table = rows_to_table(tables.EVENTS, part)
    write_cold_file(cold_file_path(
        cold_path, ingest_date, tenant_id,
        key_shard(part[0]['idempotency_key'], 1),
        keys_digest(r['idempotency_key'] for r in part)), table)


def _expire_cold(cold_path, before: datetime.date):
  """Removes partitions older than `before`; returns (partitions, events)."""
  import duckdb
  partitions, events = 0, 0
  for folder in sorted(glob.glob(os.path.join(cold_path, 'events', 'ingest_date=*'))):
    day = datetime.date.fromisoformat(folder.rsplit('=', 1)[1])
    if day < before:
      files = glob.glob(os.path.join(folder, '*', '*.parquet'))
      if files:
        events += duckdb.connect().execute(
            'SELECT count(DISTINCT idempotency_key) FROM read_parquet($f)',
            {'f': files}).fetchone()[0]
      shutil.rmtree(folder)
      partitions += 1
  return partitions, events


def _remove_idle_staging(folders, idle_since: float) -> int:
  """Deletes each folder whose newest file is older than `idle_since` (a
  POSIX time); returns how many files went."""
  removed = 0
  for folder in folders:
    files = [os.path.join(folder, f) for f in os.listdir(folder)]
    files = [f for f in files if os.path.isfile(f)]
    if files and max(os.path.getmtime(f) for f in files) < idle_since:
      shutil.rmtree(folder)
      removed += len(files)
  return removed


# Where versions before the cold outbox staged a batch run's cold pieces: a
# killed run of one of them may have left a folder there.
STAGING_FOLDER = '.staging'


def _staging_folders(db_path, cold_path):
  return sorted(glob.glob(os.path.join(staging_dir_of(db_path), '*', '')) +
                glob.glob(os.path.join(cold_path, STAGING_FOLDER, '*', '')))


def run(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--hot_sink', required=True)
  parser.add_argument('--cold_path', required=True)
  parser.add_argument('--hot_retention_days', type=float, required=True)
  parser.add_argument('--cold_retention_days', type=float, default=None)
  parser.add_argument('--staging_idle_hours', type=float, default=24,
                      help='remove staging folders with no new file for '
                      'this long; longer than any run takes (default 24)')
  parser.add_argument('--now', default=None,
                      help='RFC 3339; default: the wall clock (for tests)')
  args = parser.parse_args(argv)
  kind, _, db_path = args.hot_sink.partition(':')
  if kind != 'duckdb' or not db_path:
    parser.error('--hot_sink: the lifecycle job takes duckdb:PATH')
  if args.hot_retention_days < 0:
    parser.error('--hot_retention_days: must be >= 0')
  if args.staging_idle_hours <= 0:
    parser.error('--staging_idle_hours: must be > 0 (a running job\'s '
                 'staging would go)')
  if args.cold_retention_days is not None and \
      args.cold_retention_days < args.hot_retention_days:
    parser.error('--cold_retention_days: must be >= --hot_retention_days, or '
                 'cold would lose events that hot no longer has')
  now = parse_rfc3339(args.now) if args.now else datetime.datetime.now(_UTC)
  if now is None:
    parser.error('--now: not an RFC 3339 timestamp with a zone')
  begun = time.monotonic()
  run_id = 'lifecycle-%s-%s' % (now.strftime('%Y%m%dT%H%M%SZ'),
                                uuid.uuid4().hex[:8])
  try:
    return _lifecycle(args, db_path, now, begun, run_id)
  except Exception as failure:
    record_failure(db_path, run_id, time.monotonic() - begun, failure)
    raise


def _lifecycle(args, db_path, now, begun, run_id):
  cutoff = (now - datetime.timedelta(days=args.hot_retention_days)).replace(
      tzinfo=None)
  # A commit whose export to the cold tier did not finish (a killed run)
  # left its rows in the outbox: exported first, so that nothing below
  # writes them a second time under other names.
  exported = sum(1 for _ in export_outbox(
      args.cold_path, read_outbox(db_path),
      lambda commit_id, rows, files: drain_outbox(db_path, commit_id),
      1000000))
  con = connect(db_path)
  try:
    cursor = con.execute('SELECT * FROM events WHERE event_time < $cutoff',
                         {'cutoff': cutoff})
    names = [d[0] for d in cursor.description]
    old = [dict(zip(names, row)) for row in cursor.fetchall()]
    con.execute('CREATE TEMP TABLE old_keys (k VARCHAR)')
    if old:
      con.executemany('INSERT INTO old_keys VALUES (?)',
                      [(r['idempotency_key'],) for r in old])
    present = _keys_in_cold(con, args.cold_path)
    missing = [r for r in old if r['idempotency_key'] not in present]
    _write_missing(args.cold_path, missing)
    if missing and len(_keys_in_cold(con, args.cold_path)) != len(old):
      raise IOError('lifecycle: the cold tier does not hold every event to '
                    'move; nothing deleted from hot')
    con.execute('BEGIN TRANSACTION')
    deleted = con.execute(
        'DELETE FROM events WHERE idempotency_key IN (SELECT k FROM old_keys)'
    ).fetchone()[0] if old else 0
    con.execute('COMMIT')
  finally:
    con.close()
  expired, expired_events = 0, 0
  if args.cold_retention_days is not None:
    expired, expired_events = _expire_cold(args.cold_path, (
        now - datetime.timedelta(days=args.cold_retention_days)).date())
  stale = _remove_idle_staging(
      _staging_folders(db_path, args.cold_path),
      (now - datetime.timedelta(hours=args.staging_idle_hours)).timestamp())
  result = {'lifecycle_outbox_files_exported': exported,
            'lifecycle_copied_to_cold': len(missing),
            'lifecycle_deleted_from_hot': deleted,
            'lifecycle_cold_partitions_removed': expired,
            'lifecycle_removed_from_cold': expired_events,
            'lifecycle_stale_staging_files_removed': stale}
  write_metrics(db_path, run_id, dict(result, **run_outcome(
      True, time.monotonic() - begun)), datetime.datetime.now(_UTC))
  print('lifecycle %s: older than %s: %d events, %d copied to cold (the rest '
        'were there), %d deleted from hot; %d cold partitions removed; %d '
        'stale staging files removed' % (
            run_id, cutoff.isoformat() + 'Z', len(old), len(missing), deleted,
            expired, stale))
  return result


def main(argv=None):
  run(argv)


if __name__ == '__main__':
  main()
