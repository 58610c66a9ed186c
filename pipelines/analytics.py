"""The main job: files in, two tiers and dead letters out.

`pipelines.graph.build(pipeline, options, source=None)` wires the whole graph
(sinks included) and returns its named outputs; `run(argv)` parses and checks
the flags, runs the graph, writes the run's counters and dead-letter depth and
rates to `pipeline_metrics`, and prints a summary and any dead-letter alert
(exit status 3 with `--fail_on_dlq_alert`).
`python -m pipelines.analytics`, `run_local.sh` and the flex template all call
`run()`.
"""
import os

# Arrow allocates from the C library's malloc unless the user chooses
# (worker processes inherit it). pyarrow's default, mimalloc, kept the memory
# of freed tables (the views' regrouping, the cold tier's pieces): a
# 1,000,000-event soak peaked at 1.63 GB with it, 1.35 GB without, in the same
# time. Arrow fixes its allocator when pyarrow is imported, so this comes first.
os.environ.setdefault('ARROW_DEFAULT_MEMORY_POOL', 'system')
# gRPC (Beam's runner talks to its workers through it) logs at INFO when the
# decode step forks its helper process ("skipping fork() handlers"): a line
# on every run that tells the user nothing. Its own warnings and errors stay.
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')

import sys  # noqa: E402
import time  # noqa: E402

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import StandardOptions  # noqa: E402

from pipelines import dlq, local_streaming, summary  # noqa: E402
from transforms.sinks import bigquery_runs  # noqa: E402
from pipelines.graph import (build, is_local, new_run_id, runs_here,  # noqa: E402
                             utcnow)
from pipelines.checks import run_command  # noqa: E402
from pipelines.options import AnalyticsOptions, HotSink, parse_args  # noqa: E402

__all__ = ['build', 'run', 'main']


def run(argv=None) -> dict:
  """Runs the job on the command line's flags; returns the summary counters."""
  options = parse_args(sys.argv[1:] if argv is None else argv)
  opts = options.view_as(AnalyticsOptions)
  # The id the pipeline records its counts under (the workers get it too).
  run_id = opts.run_id = opts.run_id or new_run_id()
  hot = HotSink(opts.hot_sink)
  if hot.kind == 'duckdb':
    os.makedirs(os.path.dirname(os.path.abspath(hot.target)), exist_ok=True)
  if options.view_as(StandardOptions).streaming and is_local(options):
    local_streaming.mend()  # the local streaming runner's speed
  started = time.monotonic()
  try:
    counts = _run_pipeline(options, run_id, hot, started)
  except dlq.DeadLetterAlert:
    raise  # the run itself succeeded, and is recorded so
  except Exception as failure:
    # A failed run is recorded too (monitoring pages on it), then raised.
    summary.record_failure(
        hot.target, run_id, time.monotonic() - started, failure,
        write=lambda rid, counts: _record(hot, opts, rid, counts))
    raise
  return counts


def _record(hot, opts, run_id, counts):
  """Writes a run's counters to the hot warehouse's `pipeline_metrics`."""
  if hot.kind == 'bigquery':
    bigquery_runs.write_metrics(hot.project, hot.dataset, opts.bigquery_endpoint,
                                run_id, counts, utcnow())
  else:
    summary.write_metrics(hot.target, run_id, counts, utcnow())


def _submitted(result, options, run_id) -> dict:
  """A job submitted to a runner elsewhere (Dataflow, Flink): prints its id
  and where to watch it, and returns at once, or with `--wait` when it ends.
  The launcher reads no counters: the runner holds them (Dataflow's job
  page and Cloud Monitoring show the pipeline's counters, see
  docs/monitoring.md)."""
  from apache_beam.options.pipeline_options import (GoogleCloudOptions,
                                                    TestOptions)
  opts = options.view_as(AnalyticsOptions)
  runner = options.view_as(StandardOptions).runner
  cloud = options.view_as(GoogleCloudOptions)
  try:
    job_id = result.job_id()
  except (AttributeError, NotImplementedError):
    job_id = None
  if options.view_as(TestOptions).dry_run:
    print('dry run %s: the %s job was built and not submitted' % (
        run_id, runner))
    return {}
  where = ('https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s' % (
      cloud.region, job_id, cloud.project) if runner == 'DataflowRunner'
           else 'the %s web UI' % runner)
  print('submitted %s: %s job %s; watch it at %s' % (
      run_id, runner, job_id, where))
  if opts.wait:
    state = result.wait_until_finish()
    print('job %s ended: %s' % (job_id, state))
  return {}


def _run_pipeline(options, run_id, hot, started):
  opts = options.view_as(AnalyticsOptions)
  pipeline = beam.Pipeline(options=options)
  build(pipeline, options)
  result = pipeline.run()
  if not runs_here(options):
    return _submitted(result, options, run_id)
  result.wait_until_finish()
  seconds = time.monotonic() - started
  times = summary.step_times(result)
  # The run's counts as its commits wrote them (on every runner the
  # pipeline records them itself; here the launcher reads them back).
  if hot.kind == 'bigquery':
    counts = summary.counts_from(bigquery_runs.read_metrics(
        hot.project, hot.dataset, opts.bigquery_endpoint, run_id))
    waiting = bigquery_runs.depth(hot.project, hot.dataset, opts.bigquery_endpoint)
  else:
    counts = summary.stored_counters(hot.target, run_id)
    waiting = dlq.depth(hot.target)
  extra = dict(dlq.dlq_metrics(counts, waiting),
               **summary.run_outcome(True, seconds))
  counts.update(extra)
  _record(hot, opts, run_id, extra)
  print(summary.format_summary(run_id, counts, seconds))
  print(summary.format_step_times(times))
  fired = dlq.alerts(counts, opts.dlq_alert_threshold, opts.dlq_alert_rate)
  for message in fired:
    print('ALERT dead letters: %s' % message)
  if fired and opts.fail_on_dlq_alert:
    raise dlq.DeadLetterAlert('%d dead-letter alert(s) fired' % len(fired))
  return counts


def main(argv=None):
  run_command(run, argv)


if __name__ == '__main__':
  main()
