"""A run's record in a BigQuery warehouse, for the launcher: its counters
into and out of `pipeline_metrics`, and the dead letters waiting per kind.
(The pipeline's own counts are written by the sink's commits; see
`transforms/tallies.py`.)"""
from transforms.enrich.stores import bigquery_client
from transforms.sinks.bigquery_tables import ensure_tables, retry_races

__all__ = ['write_metrics', 'read_metrics', 'depth']


def write_metrics(project, dataset, endpoint, run_id, counts, recorded_at):
  """The run's counters into `pipeline_metrics` (insert ids: run and name)."""
  client = bigquery_client(project, endpoint)
  try:
    retry_races(ensure_tables, client, project, dataset)
    rows = [{'run_id': run_id, 'name': name, 'value': int(value),
             'recorded_at': recorded_at.isoformat()}
            for name, value in sorted(counts.items())]
    errors = client.insert_rows_json(
        '%s.%s.pipeline_metrics' % (project, dataset), rows,
        row_ids=['%s/%s' % (r['run_id'], r['name']) for r in rows])
    if errors:
      raise IOError('bigquery rejected pipeline_metrics rows: %s' % errors[:3])
  finally:
    client.close()


def read_metrics(project, dataset, endpoint, run_id) -> dict:
  """A run's rows of `pipeline_metrics`: {name: value}."""
  from google.cloud import bigquery
  client = bigquery_client(project, endpoint)
  try:
    rows = client.query(
        'SELECT name, value FROM `%s.%s.pipeline_metrics` WHERE run_id = @run'
        % (project, dataset), job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter(
                'run', 'STRING', run_id)])).result()
    return {row[0]: row[1] for row in rows}
  finally:
    client.close()


def depth(project, dataset, endpoint):
  """Dead letters not yet replayed, per kind."""
  client = bigquery_client(project, endpoint)
  try:
    rows = client.query(
        'SELECT error_kind, COUNT(*) FROM `%s.%s.dead_letters` WHERE replayed_at '
        'IS NULL GROUP BY error_kind' % (project, dataset)).result()
    return {row[0]: row[1] for row in rows}
  finally:
    client.close()
