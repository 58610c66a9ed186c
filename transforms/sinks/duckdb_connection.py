"""Opening a DuckDB warehouse file: waiting out another process's lock, in
UTC, with every contract table created if missing. Shared by the sink, the
jobs that read or repair a warehouse (replay, lifecycle, verify, dlq), the
serving layer and the tools."""
import time

import duckdb

from schemas import tables

__all__ = ['connect', 'open_with_retry', 'staging_dir_of']


def staging_dir_of(db_path: str) -> str:
  """Where the sink stages a warehouse's rows unless told otherwise."""
  return db_path + '.staging'


def open_with_retry(path: str, read_only: bool = False, wait_s: float = 30.0,
                    sleep=time.sleep):
  """`duckdb.connect`, waiting while another process holds the file's lock.

  DuckDB lets one process write a file, and no other process open it while it
  does. The writer (the commit step) and the readers (the serving layer, the
  tools) each hold it only for one short transaction, so waiting a little
  resolves a conflict; after `wait_s` the lock error is raised.
  """
  deadline = time.monotonic() + wait_s
  delay = 0.01
  while True:
    try:
      return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as e:
      if 'lock' not in str(e).lower() or time.monotonic() >= deadline:
        raise
      sleep(delay)
      delay = min(delay * 2, 0.25)


def connect(path: str, read_only: bool = False):
  """A DuckDB connection in UTC with every contract table created if missing."""
  con = open_with_retry(path, read_only=read_only)
  con.execute("SET TimeZone = 'UTC'")
  if not read_only:
    for table in list(tables.TABLES.values()) + list(
        tables.INTERNAL_TABLES.values()):
      con.execute(tables.duckdb_ddl(table))
    # Warehouses made before the replay job, message sources and the
    # late-data column lack these.
    for column in ('replayed_at TIMESTAMP', 'attributes VARCHAR'):
      con.execute('ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS ' + column)
    con.execute('ALTER TABLE events ADD COLUMN IF NOT EXISTS missed_views '
                'VARCHAR[] DEFAULT []')
  return con
