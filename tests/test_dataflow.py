"""The streaming job (Pub/Sub to BigQuery and GCS) built for Dataflow with
`--dry_run`: offline, no Google client reached, the pipeline proto checked."""
import apache_beam as beam

from pipelines.graph import build
from pipelines.options import parse_args
from tests.cli import ROOT

FLAGS = [
    '--runner', 'DataflowRunner', '--dry_run=True', '--project', 'my-project',
    '--region', 'europe-west1', '--temp_location', 'gs://my-bucket/tmp',
    '--input_subscription', 'projects/my-project/subscriptions/events',
    '--hot_sink', 'bigquery:my-project.analytics',
    '--cold_path', 'gs://my-bucket/cold', '--enable_streaming_engine',
    '--max_num_workers', '10', '--setup_file', ROOT + '/setup.py']


def _job():
  options = parse_args(FLAGS)
  pipeline = beam.Pipeline(options=options)
  build(pipeline, options)
  return pipeline.run().job


def test_streaming_job_builds_for_dataflow_with_the_expected_steps():
  job = _job()
  assert job.proto.type.name == 'JOB_TYPE_STREAMING'
  transforms = job.proto_pipeline.components.transforms.values()
  top = {t.unique_name for t in transforms if '/' not in t.unique_name}
  assert {'ReadInput', 'DecodeAndValidate', 'Dedup', 'Enrich', 'LateDataGate',
          'EventRows', 'DeadLetters', 'WriteHot'} <= top
  urns = {t.unique_name: t.spec.urn for t in transforms}
  assert 'beam:transform:pubsub_read:v1' in urns.values()
  # The BigQuery sink: a staging step per table, committed on a trigger
  # (the commit maintains the views and exports to the cold tier); the
  # gate's watermark reports join the commit's markers.
  for table in ('events', 'dead_letters'):
    assert 'WriteHot/Stage%s' % table in urns
  assert {'WriteHot/CommitTrigger', 'WriteHot/Commit',
          'WriteHot/FloorMarkers'} <= set(urns)
  # No step of the per-file or local paths sneaked in.
  assert not any('LocalFileWatch' in n or 'MatchFiles' in n for n in urns)
