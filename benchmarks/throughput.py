"""Throughput of the whole job, side by side with plain single-threaded Python.

    python -m benchmarks.throughput [--events 200000] [--workers 1|2]

Generates the corpus with the project's generator (retries, blank lines, bad
records of every kind), runs the pipeline as users run it
(`python -m pipelines.analytics`, FnApiRunner, optionally two worker processes),
then the plain-Python job on the same files, and prints records per second,
seconds, peak memory (the pipeline's: PSS of its processes summed, sampled;
the plain job's: RSS), the time per step (the pipeline's from Beam's sampled
execution-time metrics, the plain job's measured) and the ratio. The ratio is
the figure that holds on a noisy machine. Both runs' counts are checked equal.
"""
import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.plain_job import run_plain  # noqa: E402
from benchmarks.processes import tree_memory_mb  # noqa: E402
from pipelines.generate import generate  # noqa: E402


def _pipeline(data, out, workers):
  argv = [sys.executable, '-m', 'pipelines.analytics',
          '--input', os.path.join(data, 'events', '*.jsonl'),
          '--profiles', os.path.join(data, 'profiles.jsonl'),
          '--hot_sink', 'duckdb:' + os.path.join(out, 'w.duckdb'),
          '--cold_path', os.path.join(out, 'cold'), '--runner', 'FnApiRunner']
  if workers > 1:
    argv += ['--direct_num_workers=%d' % workers,
             '--direct_running_mode=multi_processing']
  start = time.perf_counter()
  job = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
  # The job and its helper process (and any workers) together, sampled.
  peak = 0.0
  while job.poll() is None:
    peak = max(peak, tree_memory_mb(job.pid)[1])
    time.sleep(0.1)
  seconds = time.perf_counter() - start
  out, err = job.communicate()
  if job.returncode:
    raise SystemExit(err[-3000:])
  lines = out.splitlines()
  summary = [l for l in lines if l.startswith('run ')][-1]
  steps = [l for l in lines if l.startswith('time per step')][-1]
  return seconds, summary, steps, peak


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--events', type=int, default=200000)
  parser.add_argument('--workers', type=int, default=1)
  parser.add_argument('--keep', action='store_true')
  args = parser.parse_args(argv)
  work = tempfile.mkdtemp(prefix='throughput-')
  try:
    data = os.path.join(work, 'data')
    manifest = generate(data, events=args.events, users=500, tenants=5, files=4)
    records = manifest['records']
    beam_s, summary, steps, beam_rss = _pipeline(
        data, os.path.join(work, 'beam'), args.workers)
    start = time.perf_counter()
    times, counts = run_plain(
        os.path.join(data, 'events', '*.jsonl'),
        os.path.join(data, 'profiles.jsonl'), os.path.join(work, 'plain.duckdb'),
        os.path.join(work, 'plain-cold'),
        datetime.datetime.now(datetime.timezone.utc))
    plain_s = time.perf_counter() - start
    plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    beam_events = int(re.search(r'events written (\d+)', summary).group(1))
    assert beam_events == counts['events_written'], (beam_events, counts)
    print('corpus: %d records, %d unique events, %d retries, %d bad' % (
        records, manifest['unique_events'], manifest['duplicates'],
        sum(manifest['bad'].values())))
    print('pipeline (%d worker%s): %.1f s, %.0f records/s, peak PSS %.0f MB '
          '(its processes together, sampled)'
          % (args.workers, 's' if args.workers > 1 else '',
             beam_s, records / beam_s, beam_rss))
    print('  its summary: %s' % summary)
    print('  its %s' % steps)
    print('plain Python, one thread: %.1f s, %.0f records/s, peak RSS %.0f MB' % (
        plain_s, records / plain_s, plain_rss))
    print('  stages: %s' % ', '.join('%s %.2f s' % kv for kv in times.items()))
    print('ratio pipeline/plain (records/s): %.2f' % (plain_s / beam_s))
    inside = float(re.search(r', ([0-9.]+) s, [0-9]+ records/s$',
                             summary).group(1))
    print(json.dumps({'records': records, 'pipeline_s': round(beam_s, 2),
                      'inside_run_s': inside, 'plain_s': round(plain_s, 2),
                      'ratio': round(plain_s / beam_s, 3)}))
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  main()
