"""`/metrics`: the warehouse's state in the Prometheus text format.

What an operator's monitoring stack scrapes and pages on (the rules are in
`templates/monitoring/prometheus-rules.yml`, and `docs/monitoring.md` says
what each series means). Every value is read from the hot warehouse at scrape
time, with one query per family (the tables are the source of truth: a run
writes its counters to `pipeline_metrics`, each letter is a row of
`dead_letters`), through the well-kept client, `prometheus-client`:

* dead letters waiting (not replayed) per kind and tenant, the age of the
  oldest per kind, and letters written and replayed per kind (counters; a
  letter is never deleted, so they only grow);
* events stored per tenant (rows of the hot `events`: the lifecycle job's
  moves to the cold tier show as a counter reset);
* freshness per table (now minus its newest `processed_at`, `updated_at`,
  `failed_at` or `recorded_at`) and the newest complete window per view;
* each job's last run (analytics, replay, lifecycle): success, duration and
  end time;
* the lookup path's cache and circuit breaker counters, summed over runs.

Aggregates only: no row, key or user of any tenant is exposed. Every kind is
exposed from the start (at 0), so the first letters of a kind are an
increase Prometheus sees, not a new series.
"""
import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from schemas import tables
from schemas.records import ERROR_KINDS
from transforms.enrich.lookup import LOOKUP_COUNTERS

__all__ = ['WarehouseCollector', 'exposition', 'job_of', 'FRESHNESS']

_UTC = datetime.timezone.utc
PREFIX = 'analytics_'
# The column whose newest value tells how fresh each table is.
FRESHNESS = {
    'events': 'processed_at', 'dead_letters': 'failed_at',
    'pipeline_metrics': 'recorded_at', 'user_activity_hourly': 'updated_at',
    'event_counts_1m': 'updated_at', 'active_users_15m': 'updated_at',
}
JOBS = ('analytics', 'replay', 'lifecycle')


def job_of(run_id: str) -> str:
  """The job a `pipeline_metrics` run id belongs to (its prefix)."""
  for job in ('replay', 'lifecycle'):
    if run_id.startswith(job + '-'):
      return job
  return 'analytics'


def _seconds(value):
  if value is None:
    return None
  if value.tzinfo is None:
    value = value.replace(tzinfo=_UTC)
  return value.timestamp()


class WarehouseCollector(object):
  """A Prometheus collector reading the hot warehouse at each scrape.

  Args:
    hot: a `serving.backends` hot backend (DuckDB or BigQuery).
    clock: the current time (tests pass their own).
  """

  def __init__(self, hot, clock=lambda: datetime.datetime.now(_UTC)):
    self._hot, self._clock = hot, clock

  def _rows(self, sql, table):
    return self._hot.query(sql % self._hot.relation(table), {})

  def collect(self):
    now = self._clock().timestamp()
    yield from self._dead_letters(now)
    yield from self._events()
    yield from self._freshness(now)
    yield from self._windows()
    yield from self._jobs()
    yield from self._lookups()

  def _dead_letters(self, now):
    waiting = GaugeMetricFamily(
        PREFIX + 'dead_letters_waiting',
        'Dead letters not yet replayed, per kind and tenant.',
        labels=['kind', 'tenant'])
    oldest = GaugeMetricFamily(
        PREFIX + 'dead_letters_oldest_waiting_age_seconds',
        'Age of the oldest dead letter not yet replayed, per kind (0: none).',
        labels=['kind'])
    written = CounterMetricFamily(
        PREFIX + 'dead_letters_written', 'Dead letters written, per kind.',
        labels=['kind'])
    replayed = CounterMetricFamily(
        PREFIX + 'dead_letters_replayed',
        'Dead letters a replay landed, per kind.', labels=['kind'])
    ages = dict.fromkeys(ERROR_KINDS, 0.0)
    for row in self._rows(
        "SELECT error_kind AS kind, coalesce(tenant_id, '') AS tenant, "
        'count(*) AS n, min(failed_at) AS oldest FROM %s WHERE replayed_at IS '
        'NULL GROUP BY 1, 2', 'dead_letters'):
      waiting.add_metric([row['kind'], row['tenant']], row['n'])
      age = max(0.0, now - _seconds(row['oldest']))
      ages[row['kind']] = max(ages.get(row['kind'], 0.0), age)
    for kind, age in sorted(ages.items()):
      oldest.add_metric([kind], age)
    totals = {kind: (0, 0) for kind in ERROR_KINDS}
    for row in self._rows(
        'SELECT error_kind AS kind, count(*) AS written, count(replayed_at) '
        'AS replayed FROM %s GROUP BY 1', 'dead_letters'):
      totals[row['kind']] = (row['written'], row['replayed'])
    for kind, (w, r) in sorted(totals.items()):
      written.add_metric([kind], w)
      replayed.add_metric([kind], r)
    yield from (waiting, oldest, written, replayed)

  def _events(self):
    events = CounterMetricFamily(
        PREFIX + 'events_written',
        'Events stored in the hot tier, per tenant (the lifecycle job moving '
        'old events to the cold tier resets it).', labels=['tenant'])
    for row in self._rows('SELECT tenant_id AS tenant, count(*) AS n FROM %s '
                          'GROUP BY 1', 'events'):
      events.add_metric([row['tenant']], row['n'])
    yield events

  def _freshness(self, now):
    fresh = GaugeMetricFamily(
        PREFIX + 'table_freshness_seconds',
        'Now minus the newest processed_at, updated_at, failed_at or '
        'recorded_at of the table (absent while the table is empty).',
        labels=['table'])
    for table, column in sorted(FRESHNESS.items()):
      rows = self._rows('SELECT max(%s) AS newest FROM %%s' % column, table)
      if rows and rows[0]['newest'] is not None:
        fresh.add_metric([table], max(0.0, now - _seconds(rows[0]['newest'])))
    yield fresh

  def _windows(self):
    newest = GaugeMetricFamily(
        PREFIX + 'view_newest_complete_window_start_timestamp_seconds',
        'Start of the newest window of the view whose row is final (not an '
        'early pane).', labels=['view'])
    for view in tables.VIEW_TABLES:
      rows = self._rows("SELECT max(window_start) AS newest FROM %s WHERE "
                        "pane_timing <> 'EARLY'", view.name)
      if rows and rows[0]['newest'] is not None:
        newest.add_metric([view.name], _seconds(rows[0]['newest']))
    yield newest

  def _jobs(self):
    success = GaugeMetricFamily(
        PREFIX + 'job_last_run_success',
        "1 if the job's last run succeeded, 0 if it failed.",
        labels=['pipeline_job'])
    duration = GaugeMetricFamily(
        PREFIX + 'job_last_run_duration_seconds',
        "How long the job's last run took.", labels=['pipeline_job'])
    ended = GaugeMetricFamily(
        PREFIX + 'job_last_run_end_timestamp_seconds',
        "When the job's last run ended.", labels=['pipeline_job'])
    last = {}
    for row in self._rows(
        "SELECT run_id, name, value, recorded_at FROM %s WHERE name IN "
        "('run_succeeded', 'run_duration_ms')", 'pipeline_metrics'):
      job = job_of(row['run_id'])
      runs = last.setdefault(job, {})
      runs.setdefault(row['run_id'], {'at': row['recorded_at']})[
          row['name']] = row['value']
    for job, runs in sorted(last.items()):
      run_id = max(runs, key=lambda r: (_seconds(runs[r]['at']), r))
      run = runs[run_id]
      if 'run_succeeded' in run:
        success.add_metric([job], run['run_succeeded'])
      if 'run_duration_ms' in run:
        duration.add_metric([job], run['run_duration_ms'] / 1000.0)
      ended.add_metric([job], _seconds(run['at']))
    yield from (success, duration, ended)

  def _lookups(self):
    found = {row['name']: row['n'] for row in self._rows(
        'SELECT name, sum(value) AS n FROM %%s WHERE name IN (%s) GROUP BY 1'
        % ', '.join("'%s'" % n for n in LOOKUP_COUNTERS), 'pipeline_metrics')}
    for name in LOOKUP_COUNTERS:
      counter = CounterMetricFamily(
          PREFIX + 'lookup_' + name,
          'The lookup path\'s %s, summed over runs (--enrichment lookup).'
          % name.replace('_', ' '))
      counter.add_metric([], found.get(name, 0) or 0)
      yield counter


def exposition(hot, clock=None) -> bytes:
  """The warehouse's metrics in the Prometheus text format."""
  registry = CollectorRegistry(auto_describe=False)
  registry.register(WarehouseCollector(hot, clock) if clock
                    else WarehouseCollector(hot))
  return generate_latest(registry)
