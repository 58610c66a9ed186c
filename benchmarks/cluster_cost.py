"""CPU per event of the graph Dataflow and Flink run in streaming, on the Fn
API path their workers run.

    python -m benchmarks.cluster_cost --input 'data/events/*.jsonl' \\
        --profiles data/profiles.jsonl --hot_sink duckdb:out/cc.duckdb \\
        --cold_path out/cc-cold [--state_shards 64] [--runner PortableRunner]
        [--events 20000]

Without `--input` it first generates `--events` records (retries, blank
lines and bad records of every kind, spread over one hour of event time)
into a temporary folder.

It builds the streaming graph's stages (`pipelines.graph.stages` with
`--streaming`: records one element each as a subscription gives them,
batched as they arrive, sharded expiring dedup, the late-data gate) and the
same sinks, committing once at the end (the in-process Fn API runner has no
processing-time triggers), and runs them on `FnApiRunner`, or with
`--runner PortableRunner` on Beam's own job service with LOOPBACK workers
(the SDK harness Dataflow and Flink run), which it starts and stops. It
prints CPU seconds per million input records for each stage (from Beam's
sampled execution-time metrics, FnApiRunner only) and in total (the CPU time
of this process and its children), and checks the run wrote every record:
events written + duplicates + dead letters + blank lines = records read.

`--state_shards` defaults to 64: the keys a cluster of 8 workers gets.
"""
import argparse
import collections
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipelines import graph, summary  # noqa: E402
from pipelines.generate import generate  # noqa: E402
from pipelines.options import AnalyticsOptions  # noqa: E402

__all__ = ['main', 'stage_of']

# Each step's label starts with its stage's transform; the stages of
# docs/architecture.md.
_STAGES = collections.OrderedDict([
    ('ingest', ('ReadInput', 'BatchInput', 'DecodeAndValidate')),
    ('dedup', ('Dedup', 'JoinBatches')),
    ('enrich', ('Enrich', 'ReadProfiles')),
    ('late-data gate', ('LateDataGate',)),
    ('sinks', ('EventRows', 'DeadLetters', 'DeadLetterRows',
               'BatchDeadLetterRows', 'Tallies', 'WriteHot')),
])


def stage_of(step: str) -> str:
  """The stage a step (a transform's full label) belongs to."""
  top = step.split('/', 1)[0]
  for stage, tops in _STAGES.items():
    if top in tops:
      return stage
  return 'other'


def _cpu_seconds():
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _job_service():
  """Beam's Python job service on a free port; returns (process, endpoint)."""
  port = _free_port()
  service = subprocess.Popen(
      [sys.executable, '-m',
       'apache_beam.runners.portability.local_job_service_main',
       '--port', str(port)], stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while time.time() < deadline:
    with socket.socket() as s:
      if s.connect_ex(('127.0.0.1', port)) == 0:
        return service, 'localhost:%d' % port
    time.sleep(0.2)
  service.kill()
  raise SystemExit('the job service did not start on port %d' % port)


def run(argv, runner='FnApiRunner'):
  """Runs the streaming graph's stages over the files `argv` names; returns
  (counters, step times in ms, CPU seconds, wall seconds)."""
  extra, service = [], None
  if runner == 'PortableRunner':
    service, endpoint = _job_service()
    extra = ['--job_endpoint', endpoint, '--environment_type', 'LOOPBACK']
  options = PipelineOptions(list(argv) + ['--runner', runner, '--streaming']
                            + extra)
  options.view_as(AnalyticsOptions).run_id = graph.new_run_id()
  cpu, wall = _cpu_seconds(), time.perf_counter()
  try:
    pipeline = beam.Pipeline(options=options)
    staged = graph.stages(pipeline, options)
    graph.sinks(options, staged, streaming=False)
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.perf_counter() - wall
  finally:
    if service is not None:  # its CPU counts once it is waited for
      service.terminate()
      service.wait()
  cpu = _cpu_seconds() - cpu
  hot = options.view_as(AnalyticsOptions).hot_sink
  counts = summary.stored_counters(hot.split(':', 1)[1], options.view_as(
      AnalyticsOptions).run_id) if hot.startswith('duckdb:') else \
      summary.read_counters(result)
  return counts, summary.step_times(result), cpu, wall


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input')
  parser.add_argument('--profiles')
  parser.add_argument('--hot_sink')
  parser.add_argument('--cold_path')
  parser.add_argument('--state_shards', type=int, default=64)
  parser.add_argument('--runner', default='FnApiRunner',
                      choices=['FnApiRunner', 'PortableRunner'])
  parser.add_argument('--events', type=int, default=20000)
  args, rest = parser.parse_known_args(argv)
  work = tempfile.mkdtemp(prefix='cluster-cost-')
  try:
    if not args.input:
      generate(os.path.join(work, 'data'), events=args.events, users=500,
               tenants=5, files=4, seed=7, span_hours=1)
      args.input = os.path.join(work, 'data', 'events', '*.jsonl')
      args.profiles = args.profiles or os.path.join(work, 'data',
                                                    'profiles.jsonl')
    flags = ['--input', args.input,
             '--hot_sink', args.hot_sink or 'duckdb:' + os.path.join(
                 work, 'w.duckdb'),
             '--cold_path', args.cold_path or os.path.join(work, 'cold'),
             '--state_shards', str(args.state_shards)] + rest
    if args.profiles:
      flags += ['--profiles', args.profiles]
    counts, steps, cpu, wall = run(flags, args.runner)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  records = counts['input_records']
  accounted = (counts['events_written'] + counts['events_already_stored']
               + counts['duplicates'] + counts['dead_letters'])
  if not records or accounted != records:
    raise SystemExit('records read %d, accounted for %d: %r'
                     % (records, accounted, counts))
  per_million = 1e6 / records
  print('cluster cost: %s, streaming graph, %d state shards, %d records '
        '(%d events written, %d duplicates, %d dead letters)' % (
            args.runner, args.state_shards, records, counts['events_written'],
            counts['duplicates'], counts['dead_letters']))
  by_stage = collections.Counter()
  for step, ms in steps.items():
    by_stage[stage_of(step)] += ms / 1000.0
  for stage in list(_STAGES) + ['other']:
    if steps and (stage in by_stage or stage != 'other'):
      print('  %-15s %8.1f CPU s per million records (sampled)' % (
          stage, by_stage[stage] * per_million))
  if steps:
    print('  %-15s %8.1f CPU s per million records (the runner itself)' % (
        'unattributed', (cpu - sum(by_stage.values())) * per_million))
  print('  %-15s %8.1f CPU s per million records: %.3f ms per record '
        '(%.1f s CPU, %.1f s wall)' % ('total', cpu * per_million,
                                      cpu * 1000 / records, cpu, wall))


if __name__ == '__main__':
  main()
