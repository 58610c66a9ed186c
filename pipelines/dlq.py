"""Dead-letter depth, rate and alerts (the seed's "DLQ as a black hole" pitfall).

* depth: letters waiting in the hot warehouse (not yet replayed), per kind;
* rate: this run's letters of a kind as a share of its input records.

Both are written to `pipeline_metrics` (`dlq_depth_<kind>`, and the rate in parts
per million as `dlq_rate_ppm_<kind>`, as the table holds integers), and an alert
fires when a kind's count in this run passes `--dlq_alert_threshold` or its rate
passes `--dlq_alert_rate`. `late_event` letters are counted like the others:
each is a view that missed an event.
"""
from typing import Dict, List

from schemas.records import ERROR_KINDS
from pipelines.checks import CommandFailure
from transforms import counters
from transforms.sinks.duckdb_connection import connect

__all__ = ['depth', 'dlq_metrics', 'alerts', 'DeadLetterAlert']


class DeadLetterAlert(CommandFailure):
  """Raised after a run whose alerts fired, with --fail_on_dlq_alert."""
  exit_code = 3

  def line(self):
    return 'failing: %s (--fail_on_dlq_alert)' % self


def depth(db_path: str) -> Dict[str, int]:
  """Letters not yet replayed in the warehouse, per kind (every kind present)."""
  con = connect(db_path)
  try:
    rows = dict(con.execute(
        'SELECT error_kind, count(*) FROM dead_letters WHERE replayed_at IS NULL '
        'GROUP BY error_kind').fetchall())
  finally:
    con.close()
  return {kind: rows.get(kind, 0) for kind in ERROR_KINDS}


def dlq_metrics(counts: dict, waiting: Dict[str, int]) -> Dict[str, int]:
  records = counts[counters.INPUT_RECORDS]
  metrics = {}
  for kind in ERROR_KINDS:
    metrics['dlq_depth_%s' % kind] = waiting.get(kind, 0)
    letters = counts[counters.dead_letter_counter(kind)]
    metrics['dlq_rate_ppm_%s' % kind] = (
        letters * 1000000 // records if records else 0)
  return metrics


def alerts(counts: dict, threshold: int, rate: float) -> List[str]:
  """One message per kind over a threshold (0 turns a threshold off)."""
  records = counts[counters.INPUT_RECORDS]
  found = []
  for kind in ERROR_KINDS:
    letters = counts[counters.dead_letter_counter(kind)]
    share = letters / records if records else 0.0
    if threshold and letters > threshold:
      found.append('%s: %d dead letters, above --dlq_alert_threshold %d' % (
          kind, letters, threshold))
    if rate and share > rate:
      found.append('%s: %.2f%% of %d input records, above --dlq_alert_rate '
                   '%.2f%%' % (kind, share * 100, records, rate * 100))
  return found
