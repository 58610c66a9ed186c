"""Streaming soak: a long generated stream through the local streaming runner,
memory sampled as it runs, so growth per record after warm-up shows.

    python -m benchmarks.stream_soak [--events 2000000] [--hours 96]
        [--dedup_ttl 86400]
        [--batch_size 5000] [--workdir DIR]

The stream (`benchmarks.event_stream`: events in event-time order over
`--hours`, retries, bad records, blank lines, late and too-late events) is
written to a file first. The job runs in a child process as users embed it:
`pipelines.graph.build` on the streaming DirectRunner, into a DuckDB file and
a Parquet folder, with a TestStream source that reads the file batch by
batch and moves the watermark to each batch's latest event time and the
processing time on by a second (so the sinks commit every few batches).
The source waits while the pipeline is more than `--lag` batches behind, as
Pub/Sub or Kafka hold a backlog at the broker (Beam's test-stream reader
would otherwise pull the whole stream into memory ahead of the pipeline).

The parent samples the job's memory (PSS of its processes, from /proc) every
second (all samples in `<workdir>/memory.csv`) and prints it at each tenth
of the records fed, the lowest in each tenth, the growth per record over the
second half, then checks the tables against the stream's manifest:
`events` rows = unique events, letters per kind = bad records per kind,
`late_event` letters = too-late events, records = rows + duplicates + other
letters, every row once in the cold tier, and the minute and hourly views
counting every event not too late exactly once; and the run's counters
(written to `pipeline_metrics` as the main command does) against the tables
with `pipelines.verify`.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.processes import tree_memory_mb  # noqa: E402

__all__ = ['main', 'write_stream', 'check_tables', 'growth_per_record']

# In the job process: records fed, and unique events through enrichment (the
# source waits while too many of those fed have not come through).
_FED = {'records': 0, 'through': 0}
_LOCK = threading.Lock()


def write_stream(path, events, hours, seed=7, batch_size=5000):
  """Writes the generated stream to `path` (a line `B <watermark micros>
  <records> <unique events>` before each batch's records, one per line);
  returns its manifest."""
  from benchmarks.event_stream import EventStream
  stream = EventStream(events, hours=hours, seed=seed, batch_size=batch_size)
  unique = 0
  with open(path, 'wb') as f:
    for records, watermark in stream:
      added, unique = stream.manifest['unique_events'] - unique, \
          stream.manifest['unique_events']
      f.write(b'B %d %d %d\n' % (watermark, len(records), added))
      for record in records:
        f.write(record.data + b'\n')
  return stream.manifest


def _read_stream(path):
  """(records, watermark micros, unique events) per batch of a file
  `write_stream` wrote."""
  from schemas.records import RawRecord
  with open(path, 'rb') as f:
    index = 0
    for header in f:
      _, watermark, count, unique = header.split()
      records = []
      for _ in range(int(count)):
        records.append(RawRecord(f.readline()[:-1], 'stream:%d' % index))
        index += 1
      yield records, int(watermark), int(unique)


def _note_through(events):
  """Counts what came through the stages (an events batch)."""
  with _LOCK:
    _FED['through'] += events.num_rows


class _Reader(object):
  """The test-stream service's reader: the file's batches as TestStream
  events, waiting while the pipeline is more than `lag` batches behind."""

  def __init__(self, path, lag, batched):
    self._path, self._lag, self._batched = path, lag, batched

  def _wait(self, fed_unique):
    deadline = time.monotonic() + 900
    while True:
      with _LOCK:
        behind = fed_unique - _FED['through']
      if behind <= self._lag or time.monotonic() > deadline:
        return
      time.sleep(0.01)

  def read_multiple(self, unused_tags):
    import apache_beam as beam
    from apache_beam.testing.test_stream import (ElementEvent,
                                                 ProcessingTimeEvent,
                                                 WatermarkEvent)
    from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
    from transforms.batch import Batch
    from transforms.ingest.local_watch import (_CODER, _WIRE_SCALE, _wire_duration,
                                        _wire_time)
    fed = 0
    for records, watermark, unique in _read_stream(self._path):
      self._wait(fed)
      at = _wire_time(watermark / 1e6)
      if self._batched:
        elements = [beam.window.TimestampedValue(Batch(records), at)]
      else:
        elements = [beam.window.TimestampedValue(r, at) for r in records]
      yield ElementEvent(elements).to_runner_api(_CODER)
      yield WatermarkEvent(at).to_runner_api(_CODER)
      yield ProcessingTimeEvent(_wire_duration(1)).to_runner_api(_CODER)
      fed += unique
      with _LOCK:
        _FED['records'] += len(records)
      print('fed %d' % _FED['records'], flush=True)
    yield WatermarkEvent(Timestamp(
        micros=MAX_TIMESTAMP.micros * _WIRE_SCALE)).to_runner_api(_CODER)


def _run_job(args):
  """The child: the streaming pipeline on the stream file."""
  import apache_beam as beam
  from apache_beam.testing.test_stream import TestStream
  from apache_beam.testing.test_stream_service import \
      TestStreamServiceController
  from pipelines import dlq, local_streaming, summary
  from pipelines.graph import build, utcnow
  from pipelines.options import parse_args
  from transforms.batch import Batch
  from transforms.ingest.local_watch import _CODER
  options = parse_args([
      '--input', args.stream, '--streaming', '--runner=BundleBasedDirectRunner',
      '--hot_sink', 'duckdb:' + os.path.join(args.out, 'w.duckdb'),
      '--cold_path', os.path.join(args.out, 'cold'),
      '--profiles', args.profiles, '--dedup_ttl', str(args.dedup_ttl),
      '--read_batch_size', str(args.batch_size), '--run_id', 'stream-soak'])
  local_streaming.mend()  # the local streaming runner's speed
  controller = TestStreamServiceController(_Reader(
      args.stream, args.lag * args.batch_size, True))
  controller.start()
  pipeline = beam.Pipeline(options=options)
  source = pipeline | TestStream(coder=_CODER, endpoint=controller.endpoint)
  source.element_type = Batch  # already micro-batches: no batching again
  outputs = build(pipeline, options, source=source)
  _ = outputs['events'] | 'Progress' >> beam.Map(_note_through)
  result = pipeline.run()
  result.wait_until_finish()
  controller.stop()
  # The run's counters, as its commits wrote them to pipeline_metrics, and
  # the dead-letter queue's, as `pipelines.analytics` adds them.
  db = os.path.join(args.out, 'w.duckdb')
  counts = summary.stored_counters(db, 'stream-soak')
  extra = dlq.dlq_metrics(counts, dlq.depth(db))
  counts.update(extra)
  summary.write_metrics(db, 'stream-soak', extra, utcnow())
  print(summary.format_summary('stream-soak', counts, 0.0), flush=True)


def check_tables(db, cold, manifest):
  """[(check, expected, found)] of the warehouse against the manifest."""
  import duckdb
  con = duckdb.connect(db, read_only=True)
  try:
    one = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    rows = one('SELECT count(*) FROM events')
    letters = dict(con.execute(
        'SELECT error_kind, count(*) FROM dead_letters GROUP BY 1').fetchall())
    minute = one('SELECT coalesce(sum(event_count), 0) FROM event_counts_1m')
    hourly = one('SELECT coalesce(sum(event_count), 0) FROM user_activity_hourly')
    cold_rows, cold_keys = duckdb.connect().execute(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM read_parquet("
        "'%s/events/*/*/*.parquet')" % cold).fetchone()
  finally:
    con.close()
  late = letters.pop('late_event', 0)
  counted = manifest['unique_events'] - manifest['too_late']
  return [
      ('events rows = unique events', manifest['unique_events'], rows),
      ('letters per kind = bad records per kind', manifest['bad'], letters),
      ('late_event letters = too-late events', manifest['too_late'], late),
      ('duplicates = records - rows - letters', manifest['duplicates'],
       manifest['records'] - rows - sum(letters.values())),
      ('cold rows = distinct cold keys = rows', (rows, rows),
       (cold_rows, cold_keys)),
      ('event_counts_1m counts every event not too late', counted, minute),
      ('user_activity_hourly counts every event not too late', counted, hourly),
  ]


def _records_at(fed, when):
  """Records fed by time `when` (from the source's (time, records) lines)."""
  done = [n for t, n in fed if t <= when]
  return done[-1] if done else 0


def growth_per_record(samples, fed, total):
  """Bytes of PSS per record over the second half of the records: the
  least-squares slope of the samples taken then (two samples would measure
  where a commit happened to be)."""
  points = [(_records_at(fed, t), mb * 2 ** 20) for t, mb in samples]
  points = [(n, b) for n, b in points if total / 2 <= n < total]
  if len(points) < 2:
    return float('nan')
  try:
    return statistics.linear_regression(*zip(*points)).slope
  except statistics.StatisticsError:  # every sample at one record count
    return float('nan')


def _memory_at_tenths(samples, fed, total):
  """PSS (MB) when each tenth of the records had been fed, and the lowest
  PSS while it was fed (between the sinks' commits, which come and go)."""
  at, lowest = [], []
  since = fed[0][0] if fed else 0.0  # from the first batch on: not start-up
  for tenth in range(1, 11):
    when = next((t for t, n in fed if n >= total * tenth / 10), None)
    if when is None:
      when = samples[-1][0]
    at.append(min(samples, key=lambda s: abs(s[0] - when))[1])
    during = [mb for t, mb in samples if since <= t <= when]
    lowest.append(min(during) if during else at[-1])
    since = when
  return at, lowest


def _parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--events', type=int, default=2000000)
  parser.add_argument('--hours', type=float, default=96)
  parser.add_argument('--dedup_ttl', type=int, default=86400)
  parser.add_argument('--batch_size', type=int, default=5000,
                      help='records per batch of the stream')
  parser.add_argument('--lag', type=int, default=3,
                      help='batches the source may be ahead of the pipeline')
  parser.add_argument('--workdir', default=None)
  parser.add_argument('--job', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--stream', help=argparse.SUPPRESS)
  parser.add_argument('--out', help=argparse.SUPPRESS)
  parser.add_argument('--profiles', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None):
  args = _parse(argv)
  if args.job:
    # From the imported module, not `__main__`: the progress step is pickled
    # by reference to it and shares `_FED` with the source in this process.
    from benchmarks import stream_soak
    stream_soak._run_job(args)
    return 0
  from pipelines.generate import generate
  work = args.workdir or tempfile.mkdtemp(prefix='stream-soak-')
  out = os.path.join(work, 'out')
  if os.path.exists(out):
    shutil.rmtree(out)
  os.makedirs(out)
  started = time.monotonic()
  stream = os.path.join(work, 'stream.txt')
  manifest = write_stream(stream, args.events, args.hours,
                          batch_size=args.batch_size)
  generate(os.path.join(work, 'profiles'), events=0, users=5000, tenants=10)
  print('generated %d records over %.0f h of event time in %.0f s' % (
      manifest['records'], args.hours, time.monotonic() - started), flush=True)
  job = subprocess.Popen(
      [sys.executable, '-m', 'benchmarks.stream_soak', '--job', '--stream',
       stream, '--out', out, '--profiles',
       os.path.join(work, 'profiles', 'profiles.jsonl'), '--dedup_ttl',
       str(args.dedup_ttl), '--lag',
       str(args.lag), '--batch_size', str(args.batch_size)],
      cwd=ROOT, stdout=subprocess.PIPE, text=True,
      # As `pipelines.analytics` sets it for its runs (see there).
      env=dict({'ARROW_DEFAULT_MEMORY_POOL': 'system'}, **dict(
          os.environ, PYTHONPATH=ROOT)))
  started = time.monotonic()
  fed = []

  summary_line = []

  def follow():
    for line in job.stdout:
      if line.startswith('fed '):
        fed.append((time.monotonic() - started, int(line.split()[1])))
      elif line.startswith('run '):
        summary_line.append(line.split(', 0.0 s')[0])
  follower = threading.Thread(target=follow, daemon=True)
  follower.start()
  samples = []
  while job.poll() is None:
    samples.append((time.monotonic() - started, tree_memory_mb(job.pid)[1]))
    time.sleep(1)
  seconds = time.monotonic() - started
  follower.join(5)
  if job.returncode:
    print('the job failed (%d)' % job.returncode)
    return 1
  tenths, lowest = _memory_at_tenths(samples, fed, manifest['records'])
  peak_at, peak = max(samples, key=lambda s: s[1])
  print('stream soak: %d records in %.0f s = %.0f records/s; peak PSS '
        '%.0f MB (at %.0f%% of the records); PSS at each tenth of the records: '
        '%s MB, the lowest in each: %s MB; growth over the second half: %.1f '
        'bytes per record' % (
            manifest['records'], seconds,
            manifest['records'] / seconds, peak,
            100.0 * _records_at(fed, peak_at) / manifest['records'],
            ', '.join('%.0f' % t for t in tenths),
            ', '.join('%.0f' % t for t in lowest),
            growth_per_record(samples, fed, manifest['records'])))
  with open(os.path.join(work, 'memory.csv'), 'w') as f:
    f.write('seconds,records_fed,pss_mb\n')
    for t, mb in samples:
      f.write('%.1f,%d,%.1f\n' % (t, _records_at(fed, t), mb))
  print('\n'.join(summary_line))
  failed = 0
  for name, expected, found in check_tables(
      os.path.join(out, 'w.duckdb'), os.path.join(out, 'cold'), manifest):
    holds = expected == found
    failed += not holds
    print('%s %s: %s' % ('ok  ' if holds else 'FAIL', name,
                         found if holds else '%s != %s' % (found, expected)))
  verify = subprocess.run(
      [sys.executable, '-m', 'pipelines.verify', '--hot_sink',
       'duckdb:' + os.path.join(out, 'w.duckdb'), '--cold_path',
       os.path.join(out, 'cold')], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT))
  print(verify.stdout.strip())
  with open(os.path.join(work, 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  return 1 if failed or verify.returncode else 0


if __name__ == '__main__':
  sys.exit(main())
