"""How much memory the DuckDB commit needs, by rows committed and memory limit.

    python -m benchmarks.commit_memory [--rows 1000000,8000000] [--limits auto,1GB]

Stages `events` rows as Parquet files (copies of one decoded event with
distinct random-looking keys and users), then commits each count of rows into an empty
warehouse under each limit, each in a fresh process, and prints seconds, peak
RSS and whether it committed. DuckDB holds the primary-key index of every row
one transaction inserts in memory and cannot spill it; this is the
measurement behind `--duckdb_memory_limit auto` (`transforms/sinks/duckdb_sink.py`).
"""
import argparse
import datetime
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pyarrow.parquet as pq  # noqa: E402

from pipelines.generate import make_event  # noqa: E402
from schemas import tables  # noqa: E402
from schemas.records import RawRecord  # noqa: E402
from schemas.rows import event_row  # noqa: E402
from transforms.ingest.decode import decode_and_validate  # noqa: E402
from transforms.sinks.staging import rows_to_table  # noqa: E402

_FILE_ROWS = 500000

# Run in a fresh process: the commit alone, its peak RSS sampled.
_COMMIT = '''
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from transforms.sinks.duckdb_connection import connect  # noqa: E402
from transforms.sinks.duckdb_sink import commit_staged
peak = [0]
def rss():
  with open('/proc/self/status') as f:
    return int([l for l in f if l.startswith('VmRSS')][0].split()[1]) // 1024
def sample():
  while True:
    peak[0] = max(peak[0], rss())
    time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
db, limit, files = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
connect(db).close()
start = time.monotonic()
try:
  commit_staged(db, [('events', f) for f in files], limit)
  outcome = 'committed'
except MemoryError:
  outcome = 'MemoryError'
print(json.dumps({'seconds': round(time.monotonic() - start, 1),
                  'peak_mb': peak[0], 'outcome': outcome}))
'''


def _stage(folder, rows):
  """Writes `rows` distinct events rows as Parquet files; returns the paths."""
  now = datetime.datetime.now(datetime.timezone.utc)
  envelope = make_event(random.Random(1), 'tenant-0', 'user-0', 'page_view', now)
  event, _ = decode_and_validate(RawRecord(json.dumps(envelope).encode()))
  base = event_row(event, now)
  paths = []
  for start in range(0, rows, _FILE_ROWS):
    count = min(_FILE_ROWS, rows - start)
    # Keys as producers make them (SHA-256 digests): sequential keys share
    # long prefixes, which DuckDB's index compresses away (8M of them
    # committed under 1GB, where 7.4M real keys did not).
    batch = [dict(base, idempotency_key=hashlib.sha256(
                      b'%d' % (start + i)).hexdigest(),
                  user_id='user-%d' % ((start + i) % 50000))
             for i in range(count)]
    path = os.path.join(folder, 'part-%04d.parquet' % (start // _FILE_ROWS))
    pq.write_table(rows_to_table(tables.EVENTS, batch), path,
                   compression='zstd')
    paths.append(path)
  return paths


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rows', default='1000000,8000000')
  parser.add_argument('--limits', default='auto,1GB')
  args = parser.parse_args(argv)
  counts = [int(n) for n in args.rows.split(',')]
  if any(n < 1 or n % _FILE_ROWS for n in counts):
    parser.error('--rows: multiples of %d' % _FILE_ROWS)
  limits = args.limits.split(',')
  work = tempfile.mkdtemp(prefix='commit-memory-')
  try:
    source = os.path.join(work, 'staged')
    os.makedirs(source)
    staged = _stage(source, max(counts))
    for count in counts:
      files = staged[:count // _FILE_ROWS]
      for limit in limits:
        # Each commit removes its staging files: commit copies of them.
        copy = os.path.join(work, 'copy-%d-%s' % (count, limit))
        os.makedirs(copy)
        copies = [shutil.copy(f, copy) for f in files]
        db = os.path.join(work, 'w.duckdb')
        for leftover in glob.glob(db + '*'):
          shutil.rmtree(leftover) if os.path.isdir(leftover) else os.remove(leftover)
        done = subprocess.run(
            [sys.executable, '-c', _COMMIT, ROOT, db, limit, json.dumps(copies)],
            capture_output=True, text=True)
        if done.returncode:
          raise SystemExit(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print('%9d rows, limit %-6s: %-11s %6.1f s, peak RSS %5d MB' % (
            count, limit, result['outcome'], result['seconds'],
            result['peak_mb']), flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  main()
