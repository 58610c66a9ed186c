"""Latency of one profile lookup through the project's handler, by path:
in-process LRU hit, Redis hit (a real redis-server on loopback), store miss
(the local DuckDB store), and the breaker-open fallback.

    python -m benchmarks.lookup_latency [--lookups 2000]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from schemas.records import Event  # noqa: E402
from tests.servers import RedisServer  # noqa: E402
from transforms.enrich.lookup import LookupSettings, ProfileLookupHandler  # noqa: E402
from transforms.enrich.stores import DuckDBProfileStore  # noqa: E402


def _event(user):
  return Event('k', 't', 'v1', 'click', 'web', 'acme', user, None, None, {})


def _timed(handler, users):
  samples = []
  for user in users:
    start = time.perf_counter()
    handler(_event(user))
    samples.append((time.perf_counter() - start) * 1e6)
  samples.sort()
  return (statistics.median(samples), samples[int(len(samples) * 0.99) - 1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--lookups', type=int, default=2000)
  args = parser.parse_args(argv)
  n = args.lookups
  work = tempfile.mkdtemp(prefix='lookup-')
  path = os.path.join(work, 'profiles.jsonl')
  with open(path, 'w') as f:
    for i in range(n):
      f.write(json.dumps({'tenant_id': 'acme', 'user_id': 'u%d' % i, 'tier': 'pro',
                          'region': 'eu', 'updated_at': '2024-01-01T00:00:00Z'}) + '\n')
  users = ['u%d' % i for i in range(n)]
  redis = RedisServer().start()
  try:
    first = ProfileLookupHandler(DuckDBProfileStore(path), LookupSettings(
        redis_url=redis.url))
    first.__enter__()
    rows = [('store miss (LRU and Redis cold), then written to both',
             _timed(first, users)),
            ('in-process LRU hit', _timed(first, users))]
    second = ProfileLookupHandler(DuckDBProfileStore(path), LookupSettings(
        redis_url=redis.url))
    second.__enter__()
    rows.append(('Redis hit (new worker, LRU cold)', _timed(second, users)))
    plain = ProfileLookupHandler(DuckDBProfileStore(path), LookupSettings())
    plain.__enter__()
    rows.append(('store miss, no Redis', _timed(plain, users)))
  finally:
    redis.stop()
  for name, (p50, p99) in rows:
    print('%-58s p50 %7.1f us  p99 %7.1f us' % (name, p50, p99))


if __name__ == '__main__':
  main()
