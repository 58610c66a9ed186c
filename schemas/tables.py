"""The output tables of contract section 4, as data.

Each table is a list of `Column`s and a key. The DuckDB DDL, the Arrow schema (for
staging files and the cold Parquet tier) and, in production, the BigQuery schema
are all derived from these lists, and `events`' columns from the `Event` record,
so there is one source of truth per shape. Timestamps are UTC.
"""
from typing import Dict, NamedTuple, Tuple

import pyarrow as pa

__all__ = ['Column', 'Table', 'TABLES', 'EVENTS', 'DEAD_LETTERS',
           'PIPELINE_METRICS', 'VIEW_TABLES', 'STAGED_EVENTS', 'COLD_OUTBOX',
           'ACTIVE_USER_PERIODS', 'COMMIT_LOCK', 'TALLY_LEDGER', 'INTERNAL_TABLES', 'arrow_schema',
           'duckdb_ddl']


class Column(NamedTuple):
  name: str
  type: str  # STRING, INT64, FLOAT64, TIMESTAMP, JSON, STRING_LIST
  nullable: bool = True


class Table(NamedTuple):
  name: str
  columns: Tuple[Column, ...]
  key: Tuple[str, ...]

  @property
  def column_names(self):
    return [c.name for c in self.columns]


def _cols(spec):
  """'name TYPE' or 'name TYPE!' (not null) per line to Columns."""
  columns = []
  for line in spec.strip().splitlines():
    name, ctype = line.split()
    columns.append(Column(name, ctype.rstrip('!'), not ctype.endswith('!')))
  return tuple(columns)


EVENTS = Table('events', _cols('''
    idempotency_key STRING!
    trace_id STRING!
    schema_version STRING!
    event_type STRING!
    source STRING!
    tenant_id STRING!
    user_id STRING!
    event_time TIMESTAMP!
    ingested_at TIMESTAMP!
    processed_at TIMESTAMP!
    user_tier STRING!
    user_region STRING!
    payload JSON!
    missed_views STRING_LIST!
    '''), ('idempotency_key',))

# What the sinks stage for `events`: its rows, and for an event too late for a
# view its `late_event` dead letter (a `dead_letters` row as JSON text). The
# commit writes that letter only if it stores the event, in the same
# transaction, so a letter names an event that some view does not count
# exactly when that event is stored (contract section 4, "Exact across runs").
STAGED_EVENTS = Table('events', EVENTS.columns + _cols('''
    late_letter STRING
    '''), EVENTS.key)

# The outbox of the cold tier: the rows one commit stored in `events`, with
# that commit's id, written in the same transaction. The cold writer exports
# each commit's rows to Parquet and then deletes them, so the cold tier holds
# exactly the rows the hot tier stored, once, even across a crash between the
# two (a pending commit is exported by the next run that commits).
COLD_OUTBOX = Table('cold_outbox', EVENTS.columns + _cols('''
    commit_id STRING!
    '''), ())  # no index to keep: `events` holds each key once already

# The user sets behind `active_users_15m`: one row per user active (in a
# stored event the view counts) in a 5-minute period of a tenant. A sliding
# window is three periods, so its distinct users are recounted from here
# whenever a commit adds to one of its periods: exact across runs.
ACTIVE_USER_PERIODS = Table('active_user_periods', _cols('''
    period_start TIMESTAMP!
    tenant_id STRING!
    user_id STRING!
    '''), ('period_start', 'tenant_id', 'user_id'))

DEAD_LETTERS = Table('dead_letters', _cols('''
    dead_letter_id STRING!
    error_kind STRING!
    error_stage STRING!
    error_message STRING!
    raw STRING!
    raw_encoding STRING!
    idempotency_key STRING
    tenant_id STRING
    origin STRING!
    failed_at TIMESTAMP!
    replay_count INT64!
    replayed_at TIMESTAMP
    attributes JSON
    '''), ('dead_letter_id',))

PIPELINE_METRICS = Table('pipeline_metrics', _cols('''
    run_id STRING!
    name STRING!
    value INT64!
    recorded_at TIMESTAMP!
    '''), ('run_id', 'name'))

USER_ACTIVITY_HOURLY = Table('user_activity_hourly', _cols('''
    window_start TIMESTAMP!
    window_end TIMESTAMP!
    tenant_id STRING!
    user_id STRING!
    event_count INT64!
    last_event_time TIMESTAMP!
    pane_timing STRING!
    updated_at TIMESTAMP!
    '''), ('window_start', 'tenant_id', 'user_id'))

EVENT_COUNTS_1M = Table('event_counts_1m', _cols('''
    window_start TIMESTAMP!
    window_end TIMESTAMP!
    tenant_id STRING!
    event_type STRING!
    event_count INT64!
    pane_timing STRING!
    updated_at TIMESTAMP!
    '''), ('window_start', 'tenant_id', 'event_type'))

ACTIVE_USERS_15M = Table('active_users_15m', _cols('''
    window_start TIMESTAMP!
    window_end TIMESTAMP!
    tenant_id STRING!
    active_users INT64!
    pane_timing STRING!
    updated_at TIMESTAMP!
    '''), ('window_start', 'tenant_id'))

VIEW_TABLES = (USER_ACTIVITY_HOURLY, EVENT_COUNTS_1M, ACTIVE_USERS_15M)
TABLES: Dict[str, Table] = {
    t.name: t for t in (EVENTS, DEAD_LETTERS, PIPELINE_METRICS) + VIEW_TABLES}
# BigQuery only: one row every commit transaction updates first, so that two
# jobs' commits conflict and run one after the other (BigQuery lets two
# transactions that only insert run at once, and two could then both store
# one key, or both create one view row). DuckDB has one writer at a time.
COMMIT_LOCK = Table('commit_lock', _cols('''
    lock_id INT64!
    holder STRING
    updated_at TIMESTAMP
    '''), ('lock_id',))

# The tallies (a run's counts as data, `transforms/tallies.py`) a commit has
# added to `pipeline_metrics`: a retried commit adds none of them again.
TALLY_LEDGER = Table('tally_ledger', _cols('''
    tally_id STRING!
    '''), ('tally_id',))

# Tables the sinks keep for themselves (not contract outputs).
INTERNAL_TABLES: Dict[str, Table] = {
    t.name: t for t in (COLD_OUTBOX, ACTIVE_USER_PERIODS, TALLY_LEDGER)}

_ARROW = {
    'STRING': pa.string(), 'JSON': pa.string(), 'INT64': pa.int64(),
    'FLOAT64': pa.float64(), 'TIMESTAMP': pa.timestamp('us', tz='UTC'),
    'STRING_LIST': pa.list_(pa.string()),
}
_DUCKDB = {
    'STRING': 'VARCHAR', 'JSON': 'VARCHAR', 'INT64': 'BIGINT',
    'FLOAT64': 'DOUBLE', 'TIMESTAMP': 'TIMESTAMP', 'STRING_LIST': 'VARCHAR[]',
}


def arrow_schema(table: Table) -> pa.Schema:
  """The Arrow schema of a table (timestamps: microseconds, UTC)."""
  return pa.schema([
      pa.field(c.name, _ARROW[c.type], nullable=c.nullable) for c in table.columns])


def duckdb_ddl(table: Table) -> str:
  """CREATE TABLE IF NOT EXISTS for DuckDB, with the table's key as primary key."""
  columns = ',\n  '.join(
      '%s %s%s' % (c.name, _DUCKDB[c.type], '' if c.nullable else ' NOT NULL')
      for c in table.columns)
  if not table.key:
    return 'CREATE TABLE IF NOT EXISTS %s (\n  %s\n)' % (table.name, columns)
  return 'CREATE TABLE IF NOT EXISTS %s (\n  %s,\n  PRIMARY KEY (%s)\n)' % (
      table.name, columns, ', '.join(table.key))
