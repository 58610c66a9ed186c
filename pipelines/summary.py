"""The run's counters: read back from Beam, stored in `pipeline_metrics`, printed."""
import collections
import datetime
import logging

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.metrics.monitoring_infos import extract_metric_result_map_value

from schemas.records import ERROR_KINDS
from transforms import counters
from transforms.sinks.duckdb_connection import connect

__all__ = ['read_counters', 'stored_counters', 'counts_from', 'write_metrics',
           'format_summary', 'step_times', 'format_step_times', 'run_outcome',
           'record_failure']

_REPORTED = (
    counters.INPUT_RECORDS, counters.BLANK_LINES, counters.VALID_EVENTS,
    counters.EVENTS_WRITTEN, counters.EVENTS_ALREADY_STORED, counters.DUPLICATES,
    counters.DEAD_LETTERS, counters.DEAD_LETTERS_WRITTEN,
    counters.ENRICHMENT_FALLBACKS, counters.UNKNOWN_FIELDS,
    counters.UPCAST_INEXACT)


def counts_from(found: dict) -> dict:
  """Counters by name, every reported one present (zero where unset)."""
  counts = {name: found.get(name, 0) for name in _REPORTED}
  for kind in ERROR_KINDS:
    name = counters.dead_letter_counter(kind)
    counts[name] = found.get(name, 0)
  for name, value in found.items():
    counts.setdefault(name, value)
  return counts


def read_counters(result) -> dict:
  """The pipeline's Beam counters by name (committed values), zero where
  unset: what a local runner's result holds (the run's own record is the
  `pipeline_metrics` rows its commits wrote: `stored_counters`)."""
  found = {}
  query = result.metrics().query(MetricsFilter().with_namespace(
      counters.NAMESPACE))
  for counter in query['counters']:
    value = counter.committed if counter.committed is not None else counter.attempted
    found[counter.key.metric.name] = found.get(
        counter.key.metric.name, 0) + (value or 0)
  # The events the sink was handed and its commits did not store.
  found[counters.EVENTS_ALREADY_STORED] = found.get(
      counters.EVENTS_STAGED, 0) - found.get(counters.EVENTS_WRITTEN, 0)
  return counts_from(found)


def stored_counters(db_path, run_id) -> dict:
  """A run's counters as its commits wrote them to `pipeline_metrics`."""
  con = connect(db_path)
  try:
    return counts_from(dict(con.execute(
        'SELECT name, value FROM pipeline_metrics WHERE run_id = ?',
        [run_id]).fetchall()))
  finally:
    con.close()


def write_metrics(db_path, run_id, counts, recorded_at):
  """One `pipeline_metrics` row per counter of this run (upsert by run and name)."""
  con = connect(db_path)
  try:
    con.executemany(
        'INSERT OR REPLACE INTO pipeline_metrics VALUES (?, ?, ?, ?)',
        [(run_id, name, int(value), recorded_at.replace(tzinfo=None))
         for name, value in sorted(counts.items())])
  finally:
    con.close()


def run_outcome(succeeded: bool, seconds: float) -> dict:
  """A run's own rows of `pipeline_metrics`: whether it succeeded (1 or 0)
  and how long it took; its `recorded_at` is when it ended. The serving
  layer's `/metrics` reads each job's last run from them."""
  return {'run_succeeded': int(succeeded),
          'run_duration_ms': int(round(seconds * 1000))}


def record_failure(db_path, run_id, seconds, failure, write=None):
  """Records a failed run's outcome in `pipeline_metrics` (monitoring's
  JobFailed pages on it); the warehouse itself may be what failed, so a
  failure to record is logged, and the caller raises the run's own error.
  `write(run_id, counts)` writes elsewhere than DuckDB's `db_path`."""
  outcome = run_outcome(False, seconds)
  try:
    if write is not None:
      write(run_id, outcome)
    else:
      write_metrics(db_path, run_id, outcome,
                    datetime.datetime.now(datetime.timezone.utc))
  except Exception as unrecorded:  # noqa: BLE001 - logged, the run re-raises
    logging.warning('run %s failed (%s) and could not be recorded: %s',
                    run_id, failure, unrecorded)


def format_summary(run_id, counts, seconds) -> str:
  """The summary a local run prints."""
  kinds = ', '.join(
      '%s=%d' % (kind, counts[counters.dead_letter_counter(kind)])
      for kind in ERROR_KINDS if counts[counters.dead_letter_counter(kind)])
  rate = counts[counters.INPUT_RECORDS] / seconds if seconds > 0 else 0.0
  return (
      'run %s: records read %d, blank lines %d, events written %d '
      '(already stored %d), duplicates %d, dead letters %d (%s), '
      '%.1f s, %.0f records/s' % (
          run_id, counts[counters.INPUT_RECORDS], counts[counters.BLANK_LINES],
          counts[counters.EVENTS_WRITTEN], counts[counters.EVENTS_ALREADY_STORED],
          counts[counters.DUPLICATES], counts[counters.DEAD_LETTERS],
          kinds or 'none', seconds, rate))


_EXECUTION_TIME = 'beam:metric:pardo_execution_time:process_bundle_msecs:v1'


def step_times(result) -> dict:
  """Milliseconds spent in each step, as the in-process runner's state
  sampler measured them (sampled, so approximate); empty for other runners."""
  by_stage = getattr(result, '_monitoring_infos_by_stage', None)
  if not isinstance(by_stage, dict):  # only the in-process runner's result
    return {}
  # Its values can be one-shot iterators, shared with `result.metrics()`:
  # made lists first, so that reading one does not empty the other.
  for stage in list(by_stage):
    by_stage[stage] = list(by_stage[stage])
  totals = collections.Counter()
  for info in result.monitoring_infos():
    if info.urn == _EXECUTION_TIME and 'PTRANSFORM' in info.labels:
      totals[info.labels['PTRANSFORM']] += extract_metric_result_map_value(info)
  return {step: ms for step, ms in totals.items() if ms > 0}


def format_step_times(times, top=10) -> str:
  """The slowest steps as one line, for the summary."""
  slowest = sorted(times.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
  return 'time per step (ms, sampled): %s' % (
      ', '.join('%s %d' % kv for kv in slowest) or 'not reported by this runner')
