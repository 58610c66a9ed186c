"""BigQuery's tables for the hot sink: their schemas, creating them, the
per-job staging tables, the commit's SQL (`events_commit_script`), and
running a job again when it lost a race with another job's (`retry_races`).
Used by the sink (`transforms/sinks/bigquery_sink.py`) and its metrics writer."""
import datetime

from schemas import tables
from transforms import counters
from transforms.views import sql as view_sql
from transforms.sinks.staging import staged_table

__all__ = ['bq_schema', 'ensure_tables', 'retry_races', 'staging_id',
           'ensure_staging', 'events_commit_script', 'letters_merge',
           'tallies_script', 'drain_script', 'STAGED_AT']

STAGED_AT = '_staged_at'
_PARTITION = {'events': 'event_time', 'dead_letters': 'failed_at',
              'pipeline_metrics': 'recorded_at', 'cold_outbox': 'processed_at',
              'active_user_periods': 'period_start'}
# Tables without a time column: not partitioned.
_UNPARTITIONED = ('tally_ledger',)


def _field(column):
  from google.cloud import bigquery
  if column.type == 'STRING_LIST':
    return bigquery.SchemaField(column.name, 'STRING', mode='REPEATED')
  return bigquery.SchemaField(
      column.name, 'STRING' if column.type == 'JSON' else column.type,
      mode='NULLABLE' if column.nullable else 'REQUIRED')


# What BigQuery says when a job lost a race with another (two jobs committing
# at once, or creating the same table): "Transaction is aborted due to
# concurrent update", "Could not serialize access to table ... due to
# concurrent update"; the emulator's "Failed to commit DuckLake transaction".
# BigQuery's advice is to run the job again: it has changed nothing.
_CONFLICTS = ('concurrent update', 'serialize access', 'Failed to commit')


def _lost_a_race(error) -> bool:
  from google.api_core import exceptions
  return isinstance(error, exceptions.GoogleAPICallError) and any(
      words in str(error) for words in _CONFLICTS)


def retry_races(fn, *args, **kwargs):
  """`fn(*args, **kwargs)`, run again (up to 8 times, with a growing random
  wait) while BigQuery says it lost a race with a concurrent job; any other
  error, or a race lost every time, is raised."""
  import tenacity
  return tenacity.Retrying(
      retry=tenacity.retry_if_exception(_lost_a_race),
      stop=tenacity.stop_after_attempt(8),
      wait=tenacity.wait_random_exponential(multiplier=0.2, max=5),
      reraise=True)(fn, *args, **kwargs)


def bq_schema(table, staging=False):
  from google.cloud import bigquery
  fields = [_field(c) for c in table.columns]
  if staging:
    fields.append(bigquery.SchemaField(STAGED_AT, 'TIMESTAMP', mode='REQUIRED'))
  return fields


def _partition_field(table):
  return _PARTITION.get(table.name, 'window_start')


def ensure_tables(client, project, dataset):
  """Creates the dataset and the contract's tables where missing (never alters
  an existing one: an operator's table is used as it is)."""
  from google.cloud import bigquery
  client.create_dataset('%s.%s' % (project, dataset), exists_ok=True)
  lock = '%s.%s.%s' % (project, dataset, tables.COMMIT_LOCK.name)
  client.create_table(bigquery.Table(lock, schema=bq_schema(
      tables.COMMIT_LOCK)), exists_ok=True)
  client.query('INSERT INTO `%s` (lock_id) SELECT 1 FROM UNNEST([1]) WHERE NOT '
               'EXISTS (SELECT 1 FROM `%s`)' % (lock, lock)).result()
  for table in list(tables.TABLES.values()) + list(
      tables.INTERNAL_TABLES.values()):
    target = bigquery.Table('%s.%s.%s' % (project, dataset, table.name),
                            schema=bq_schema(table))
    if table.name not in _UNPARTITIONED:
      target.time_partitioning = bigquery.TimePartitioning(
          type_=bigquery.TimePartitioningType.DAY,
          field=_partition_field(table))
    if table.name == tables.EVENTS.name:
      # The views' commit recounts nothing from here, but a range of one
      # tenant's events (serving, backfill checks) prunes blocks this way.
      target.clustering_fields = ['tenant_id', 'event_time']
    elif 'tenant_id' in table.column_names:
      target.clustering_fields = ['tenant_id']
    client.create_table(target, exists_ok=True)


def staging_id(project, dataset, name, token):
  return '%s.%s._staging_%s_%s' % (project, dataset, name, token)


def ensure_staging(client, project, dataset, name, token):
  """A staging table with the target's current schema plus `_staged_at`
  (and, for `events`, each late event's letter: `tables.STAGED_EVENTS`)."""
  from google.cloud import bigquery
  target = client.get_table('%s.%s.%s' % (project, dataset, name))
  extra = [_field(c) for c in staged_table(name).columns
           if c.name not in tables.TABLES[name].column_names]
  staging = bigquery.Table(
      staging_id(project, dataset, name, token),
      schema=list(target.schema) + extra + [bigquery.SchemaField(
          STAGED_AT, 'TIMESTAMP', mode='REQUIRED')])
  staging.time_partitioning = bigquery.TimePartitioning(
      type_=bigquery.TimePartitioningType.DAY, field=STAGED_AT)
  staging.expires = (datetime.datetime.now(datetime.timezone.utc)
                     + datetime.timedelta(days=7))
  client.create_table(staging, exists_ok=True)


def letters_merge(target, staging):
  """The MERGE of staged letters (since @since): a letter is inserted once."""
  cols = tables.DEAD_LETTERS.column_names
  return ('MERGE `%s` T USING (SELECT %s FROM `%s` WHERE %s >= @since '
          'QUALIFY ROW_NUMBER() OVER (PARTITION BY dead_letter_id ORDER BY '
          'failed_at) = 1) S ON T.dead_letter_id = S.dead_letter_id '
          'WHEN NOT MATCHED THEN INSERT (%s) VALUES (%s)' % (
              target, ', '.join(cols), staging, STAGED_AT, ', '.join(cols),
              ', '.join('S.' + c for c in cols)))


def _late_letter_values():
  picks = []
  for column in tables.DEAD_LETTERS.columns:
    value = "JSON_VALUE(late_letter, '$.%s')" % column.name
    if column.type in ('TIMESTAMP', 'INT64'):
      value = 'CAST(%s AS %s)' % (value, column.type)
    picks.append(value + ' AS ' + column.name)
  return ', '.join(picks)


def events_commit_script(prefix, staging, streaming):
  """One multi-statement transaction: the staged events (since @since) not
  yet stored are inserted (`fresh`), with their rows in the cold tier's
  outbox (@commit) and their late letters, and the views grow by them
  (`view_sql`); a retried commit finds them stored and changes nothing. The
  run's (@run) tallies (@tallies) and the commit's own counts go to
  `pipeline_metrics` in the same transaction. Its last statement returns
  (staged rows, stored, late letters written)."""
  events = ', '.join(tables.EVENTS.column_names)
  letters = ', '.join(tables.DEAD_LETTERS.column_names)
  statements = [
      'BEGIN TRANSACTION',
      # First: a write every commit makes, so concurrent commits conflict
      # and one runs again after the other (`tables.COMMIT_LOCK`).
      'UPDATE `%s.commit_lock` SET holder = @commit, updated_at = @now WHERE '
      'TRUE' % prefix,
      'CREATE TEMP TABLE staged_events AS SELECT * EXCEPT (%s) FROM `%s` '
      'WHERE %s >= @since' % (STAGED_AT, staging, STAGED_AT),
      'CREATE TEMP TABLE fresh AS SELECT s.* FROM staged_events s WHERE NOT '
      'EXISTS (SELECT 1 FROM `%s.events` e WHERE e.idempotency_key = '
      's.idempotency_key) QUALIFY ROW_NUMBER() OVER (PARTITION BY '
      's.idempotency_key ORDER BY s.processed_at, s.trace_id) = 1' % prefix,
      'INSERT INTO `%s.events` (%s) SELECT %s FROM fresh' % (
          prefix, events, events),
      'INSERT INTO `%s.cold_outbox` (%s, commit_id) SELECT %s, @commit FROM '
      'fresh' % (prefix, events, events),
      'CREATE TEMP TABLE late AS SELECT %s FROM fresh WHERE late_letter IS NOT '
      'NULL' % _late_letter_values(),
      'CREATE TEMP TABLE late_new AS SELECT * FROM late L WHERE NOT EXISTS '
      '(SELECT 1 FROM `%s.dead_letters` D WHERE D.dead_letter_id = '
      'L.dead_letter_id)' % prefix,
      'INSERT INTO `%s.dead_letters` (%s) SELECT %s FROM late_new' % (
          prefix, letters, letters),
      # The commit's own counts, added with the staged tallies below.
      "CREATE TEMP TABLE own AS SELECT CONCAT('commit:', @commit) AS tally_id,"
      " 'events_written' AS name, (SELECT COUNT(*) FROM fresh) AS value "
      "UNION ALL SELECT CONCAT('commit:', @commit), 'dead_letters_written', "
      "(SELECT COUNT(*) FROM late_new) UNION ALL SELECT CONCAT('commit:', "
      "@commit), 'dead_letters_late_event', (SELECT COUNT(*) FROM late_new)",
  ]
  statements += view_sql.bigquery_view_statements(prefix, streaming)
  statements += tallies_statements(prefix, own=True)
  statements.append('COMMIT TRANSACTION')
  statements.append('SELECT (SELECT COUNT(*) FROM staged_events), (SELECT '
                    'COUNT(*) FROM fresh), (SELECT COUNT(*) FROM late_new)')
  return ';\n'.join(statements) + ';'



def tallies_statements(prefix, own=False):
  """Statements adding `@tallies` (JSON: [{"id", "name", "value"}]), and
  with `own` the temp table `own` (a commit's own counts), not yet
  in `tally_ledger` to the run `@run`'s rows of `pipeline_metrics`, and
  deriving its `events_already_stored` (staged minus written); they run
  inside a commit's transaction (DELETE and INSERT: no MERGE there)."""
  metrics = '`%s.pipeline_metrics`' % prefix
  ledger = '`%s.tally_ledger`' % prefix
  return [
      "CREATE TEMP TABLE tallied AS SELECT JSON_VALUE(t, '$.id') AS tally_id, "
      "JSON_VALUE(t, '$.name') AS name, CAST(JSON_VALUE(t, '$.value') AS INT64)"
      ' AS value FROM UNNEST(JSON_QUERY_ARRAY(@tallies)) AS t'
      + (' UNION ALL SELECT tally_id, name, value FROM own' if own else ''),
      'CREATE TEMP TABLE new_tallies AS SELECT * FROM tallied T WHERE NOT '
      'EXISTS (SELECT 1 FROM %s L WHERE L.tally_id = T.tally_id)' % ledger,
      'INSERT INTO %s (tally_id) SELECT DISTINCT tally_id FROM new_tallies'
      % ledger,
      'CREATE TEMP TABLE added AS SELECT name, SUM(value) AS value FROM '
      'new_tallies GROUP BY name',
      'CREATE TEMP TABLE summed AS SELECT A.name, COALESCE(M.value, 0) + '
      'A.value AS value FROM added A LEFT JOIN %s M ON M.run_id = @run AND '
      'M.name = A.name' % metrics,
      'DELETE FROM %s WHERE run_id = @run AND name IN (SELECT name FROM '
      'summed)' % metrics,
      'INSERT INTO %s (run_id, name, value, recorded_at) SELECT @run, name, '
      'value, @now FROM summed' % metrics,
      # The counters every run records, at 0 until something is counted.
      'INSERT INTO %s (run_id, name, value, recorded_at) SELECT @run, name, 0, '
      '@now FROM UNNEST([%s]) AS name WHERE name NOT IN (SELECT name FROM %s '
      'WHERE run_id = @run)' % (metrics, ', '.join(
          "'%s'" % n for n in counters.recorded()), metrics),
      "DELETE FROM %s WHERE run_id = @run AND name = 'events_already_stored'"
      % metrics,
      'INSERT INTO %s (run_id, name, value, recorded_at) SELECT @run, '
      "'events_already_stored', COALESCE(SUM(IF(name = 'events_staged', "
      "value, 0)), 0) - COALESCE(SUM(IF(name = 'events_written', value, 0)), "
      "0), @now FROM %s WHERE run_id = @run AND name IN ('events_staged', "
      "'events_written')" % (metrics, metrics),
  ]



def tallies_script(prefix):
  """A commit without events rows: the tallies alone, in a transaction
  behind the commit lock."""
  return ';\n'.join(
      ['BEGIN TRANSACTION',
       'UPDATE `%s.commit_lock` SET holder = @run, updated_at = @now WHERE '
       'TRUE' % prefix]
      + tallies_statements(prefix) + ['COMMIT TRANSACTION']) + ';'



def drain_script(prefix):
  """An exported commit's outbox rows deleted and the export's counts
  (`@tallies`) added, in one transaction."""
  return ';\n'.join(
      ['BEGIN TRANSACTION',
       'UPDATE `%s.commit_lock` SET holder = @commit, updated_at = @now WHERE '
       'TRUE' % prefix,
       'DELETE FROM `%s.cold_outbox` WHERE commit_id = @commit' % prefix]
      + tallies_statements(prefix) + ['COMMIT TRANSACTION']) + ';'
