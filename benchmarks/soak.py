"""Soak: a large generated corpus through the local runner, memory sampled.

    python -m benchmarks.soak [--events 2000000] [--files 16] [--dedup_ttl 86400]

Generates the corpus with the project's generator, runs the main command as
users run it, samples the job's memory (the process and its children, from
/proc: PSS, which splits pages a forked helper shares with the job, and RSS)
every second, and prints records per second, the peaks, and memory at each
quarter of the run, so growth per record after warm-up shows. It then
checks the identity with `pipelines.verify`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.processes import tree_memory_mb
from pipelines.generate import generate

__all__ = ['main']


def _memory_at(samples, seconds, parts):
  """Memory at the end of each of `parts` equal parts of the run (the nearest
  (time, MB) sample), to show its shape."""
  return [min(samples, key=lambda s: abs(s[0] - seconds * i / parts))[1]
          for i in range(1, parts + 1)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--events', type=int, default=2000000)
  parser.add_argument('--files', type=int, default=16)
  parser.add_argument('--dedup_ttl', type=int, default=86400)
  parser.add_argument('--workdir', default=None)
  args = parser.parse_args(argv)
  work = args.workdir or tempfile.mkdtemp(prefix='soak-')
  data, out = os.path.join(work, 'data'), os.path.join(work, 'out')
  started = time.monotonic()
  manifest = generate(data, events=args.events, users=5000, tenants=10,
                      files=args.files, span_hours=48)
  print('generated %d records in %.0f s' % (manifest['records'],
                                            time.monotonic() - started))
  if os.path.exists(out):  # a warehouse from an earlier run would already
    shutil.rmtree(out)      # hold every event: the commit would insert nothing
  db = os.path.join(out, 'warehouse.duckdb')
  command = [sys.executable, '-m', 'pipelines.analytics', '--input',
             os.path.join(data, 'events', '*.jsonl'), '--profiles',
             os.path.join(data, 'profiles.jsonl'), '--hot_sink', 'duckdb:' + db,
             '--cold_path', os.path.join(out, 'cold'), '--runner', 'FnApiRunner',
             '--dedup_ttl', str(args.dedup_ttl)]
  started = time.monotonic()
  job = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
  samples, peak_rss = [], 0.0
  while job.poll() is None:
    rss, pss = tree_memory_mb(job.pid)
    peak_rss = max(peak_rss, rss)
    samples.append((time.monotonic() - started, pss))
    time.sleep(1)
  seconds = time.monotonic() - started
  summary = job.stdout.read().strip()
  if job.returncode:
    print('the job failed (%d)' % job.returncode)
    return 1
  peak = max(pss for _, pss in samples)
  quarters, tenths = _memory_at(samples, seconds, 4), _memory_at(samples, seconds, 10)
  print('\n'.join(line for line in summary.splitlines()
                  if line.startswith(('run ', 'time per step'))))
  print('soak: %d records in %.0f s = %.0f records/s; peak PSS %.0f MB (peak '
        'RSS %.0f MB, shared pages counted in each process); PSS at each '
        'quarter of the run: %s MB' % (
            manifest['records'], seconds, manifest['records'] / seconds, peak,
            peak_rss, ', '.join('%.0f' % q for q in quarters)))
  print('PSS at each tenth of the run: %s MB' % ', '.join(
      '%.0f' % t for t in tenths))
  verify = subprocess.run([sys.executable, '-m', 'pipelines.verify', '--hot_sink',
                           'duckdb:' + db, '--cold_path', os.path.join(out, 'cold')],
                          capture_output=True, text=True)
  print(verify.stdout.strip().splitlines()[-5:] and '\n'.join(
      verify.stdout.strip().splitlines()[-5:]))
  return verify.returncode


if __name__ == '__main__':
  sys.exit(main())
