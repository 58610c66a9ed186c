"""Dedup state memory and speed: N distinct keys through the dedup step.

    python -m benchmarks.dedup_state [--keys 1000000] [--batch 5000]

Runs `DedupBatches` (the batched path's stateful dedup, 16 shards, one
event-time timer per shard at its latest expiry) on FnApiRunner over N
distinct keys plus 5% retries, and prints the step's records per second, the
peak RSS of the process, and the state's bytes per key measured as the
pickled size of every shard's key set (the keys as the step keeps them,
`compact_key`; what a runner stores) divided by N.
"""
import argparse
import datetime
import pickle
import resource
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

sys.path.insert(0, __file__.rsplit('/', 2)[0])

from schemas.keys import key_shard  # noqa: E402
from schemas.records import Event  # noqa: E402
from schemas.rows import events_table  # noqa: E402
from transforms.dedup.shards import (DedupBatches, KeySet, SHARDS,  # noqa: E402
                                      compact_key)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 3, 1, tzinfo=UTC)


def _events(n, batch, retries=0.05):
  import hashlib
  out = []
  for i in range(n + int(n * retries)):
    k = i if i < n else (i * 7919) % n
    key = hashlib.sha256(b'%d' % k).hexdigest()
    out.append(Event(key, 't', 'v1', 'click', 'web', 'acme', 'u%d' % (k % 1000),
                     T0 + datetime.timedelta(seconds=k % 3600), T0, {}))
    if len(out) == batch:
      yield events_table(out, T0, with_source=True)
      out = []
  if out:
    yield events_table(out, T0, with_source=True)


class _Count(beam.DoFn):
  def process(self, batch):
    yield batch.num_rows


def _run(n, batch):
  opts = PipelineOptions(['--runner=FnApiRunner'])
  start = time.perf_counter()
  with beam.Pipeline(options=opts) as p:
    ((p | beam.Create(list(_events(n, batch))) | DedupBatches(86400)).events
     | beam.ParDo(_Count()) | beam.CombineGlobally(sum)
     | beam.Map(lambda total, n=n: print('unique out: %d (expected %d)' % (total, n))))
  return time.perf_counter() - start


def _state_bytes(n):
  """Pickled size of the shards' key sets holding n keys (what state stores)."""
  import hashlib
  shards = [KeySet() for _ in range(SHARDS)]
  for k in range(n):
    key = hashlib.sha256(b'%d' % k).hexdigest()
    shards[key_shard(key, SHARDS)].keys.add(compact_key(key))
  return sum(len(pickle.dumps(s, pickle.HIGHEST_PROTOCOL)) for s in shards)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--keys', type=int, default=1000000)
  parser.add_argument('--batch', type=int, default=5000)
  args = parser.parse_args(argv)
  records = args.keys + int(args.keys * 0.05)
  seconds = _run(args.keys, args.batch)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  state = _state_bytes(args.keys)
  print('batched dedup: %d records (%d distinct keys) in %.1f s: %.0f records/s'
        % (records, args.keys, seconds, records / seconds))
  print('peak RSS of the process (input, state, runner): %.0f MB' % rss)
  print('state: %.1f MB pickled, %.1f bytes per key' % (
      state / 2 ** 20, state / args.keys))


if __name__ == '__main__':
  main()
