"""A bounded load test of the API: `python -m serving.load --url http://127.0.0.1:P
--key KEY [--seconds 10] [--concurrency 8]`. Loopback only; stops by itself.

Each worker thread loops over a mix of the dashboard's calls (catalog, a view
range, an events range, one event by key) and the script prints requests per
second, p50 and p99 latency and the status codes seen.
"""
import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ['run_load', 'main']


def _get(url, key):
  request = urllib.request.Request(url, headers={'X-API-Key': key})
  started = time.perf_counter()
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      response.read()
      status = response.status
  except urllib.error.HTTPError as e:
    status = e.code
  return status, time.perf_counter() - started


def _paths(base, key):
  with urllib.request.urlopen(urllib.request.Request(
      base + '/v1/catalog', headers={'X-API-Key': key}), timeout=30) as r:
    catalog = json.load(r)
  paths = ['/v1/catalog']
  for view in catalog['views']:
    newest = view['newest_complete_window']
    if newest:
      paths.append('/v1/views/%s?%s' % (view['name'], urllib.parse.urlencode(
          {'start': newest[:11] + '00:00:00Z', 'end': newest[:11] + '23:59:59Z'})))
  return paths


def run_load(base, key, seconds=10.0, concurrency=8, extra_paths=()):
  """Returns {'requests', 'rps', 'p50_ms', 'p99_ms', 'statuses'}."""
  if not base.startswith(('http://127.0.0.1', 'http://localhost')):
    raise ValueError('--url: the load test runs against loopback only')
  paths = _paths(base, key) + list(extra_paths)
  latencies, statuses, lock = [], {}, threading.Lock()
  deadline = time.monotonic() + seconds

  def worker(offset):
    n = offset
    while time.monotonic() < deadline:
      status, latency = _get(base + paths[n % len(paths)], key)
      n += 1
      with lock:
        latencies.append(latency)
        statuses[status] = statuses.get(status, 0) + 1

  started = time.monotonic()
  threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  elapsed = time.monotonic() - started
  ordered = sorted(latencies)
  return {'requests': len(ordered), 'rps': round(len(ordered) / elapsed, 1),
          'p50_ms': round(statistics.median(ordered) * 1000, 1),
          'p99_ms': round(ordered[min(len(ordered) - 1,
                                      int(len(ordered) * 0.99))] * 1000, 1),
          'statuses': statuses}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--url', required=True)
  parser.add_argument('--key', required=True)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--concurrency', type=int, default=8)
  args = parser.parse_args(argv)
  try:
    result = run_load(args.url.rstrip('/'), args.key, args.seconds,
                      args.concurrency)
  except ValueError as e:
    parser.error(str(e))
  print('%(requests)d requests, %(rps).1f requests/s, p50 %(p50_ms).1f ms, '
        'p99 %(p99_ms).1f ms, statuses %(statuses)s' % result)
  return 0 if set(result['statuses']) == {200} else 1


if __name__ == '__main__':
  sys.exit(main())
