"""The serving layer over real HTTP: tier routing, staleness, the catalog, row-
level security, bad requests, the dashboard in headless Chromium, answers while
a writer commits, and the lifecycle and verify jobs."""
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from pipelines.generate import generate
from tests.cli import ROOT, query, run_module, start_watch_job
from tests.servers import ApiServer

UTC = datetime.timezone.utc
KEYS = {'reader-tenant-0-key': {'tenant_id': 'tenant-0', 'role': 'reader'},
        'reader-tenant-1-key': {'tenant_id': 'tenant-1', 'role': 'reader'},
        'admin-operations-key': {'tenant_id': 'ops', 'role': 'admin'}}
A, B, ADMIN = list(KEYS)
BOUNDARY = datetime.datetime(2024, 3, 1, 1, 0, tzinfo=UTC)


def get(server, path, key=A, **params):
  url = server.url + path + ('?' + urllib.parse.urlencode(params) if params else '')
  request = urllib.request.Request(url, headers={'X-API-Key': key} if key else {})
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, dict(response.headers), json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, dict(e.headers), json.loads(e.read() or b'{}')


@pytest.fixture(scope='module')
def warehouse(tmp_path_factory):
  base = tmp_path_factory.mktemp('serving')
  data = str(base / 'data')
  generate(data, events=1500, users=30, tenants=2, files=1, seed=5, span_hours=2)
  db, cold = str(base / 'w.duckdb'), str(base / 'cold')
  run_module('pipelines.analytics', '--input', data + '/events/*.jsonl',
             '--profiles', data + '/profiles.jsonl', '--hot_sink', 'duckdb:' + db,
             '--cold_path', cold, '--runner', 'FnApiRunner')
  keys = base / 'keys.json'
  keys.write_text(json.dumps(KEYS))
  return base, db, cold, str(keys)


@pytest.fixture(scope='module')
def server(warehouse):
  _, db, cold, keys = warehouse
  # Hot retention chosen so that the hot/cold boundary falls at 01:00 on the
  # sample's day (its events span 00:00 to 02:00).
  days = (datetime.datetime.now(UTC) - BOUNDARY).total_seconds() / 86400
  api = ApiServer('--hot_sink', 'duckdb:' + db, '--cold_path', cold,
                  '--api_keys', keys, '--hot_retention_days', repr(days))
  api.start()
  yield api
  api.stop()


def _keys_in(db, tenant, start, end):
  return sorted(r[0] for r in query(
      db, 'SELECT idempotency_key FROM events WHERE tenant_id = ? AND '
      'event_time >= ? AND event_time < ?',
      [tenant, start.replace(tzinfo=None), end.replace(tzinfo=None)]))


@pytest.mark.parametrize('start, end, tiers', [
    ('01:10', '01:50', ['hot']), ('00:00', '00:50', ['cold']),
    ('00:30', '01:30', ['cold', 'hot'])])
def test_event_ranges_are_routed_by_tier_and_merged_exactly(
    warehouse, server, start, end, tiers):
  _, db, _, _ = warehouse
  lo = datetime.datetime.fromisoformat('2024-03-01T%s:00+00:00' % start)
  hi = datetime.datetime.fromisoformat('2024-03-01T%s:00+00:00' % end)
  status, headers, body = get(server, '/v1/events', start=lo.isoformat(),
                              end=hi.isoformat(), limit=10000)
  assert status == 200 and body['tiers'] == tiers
  assert headers['x-tiers'] == ','.join(tiers)
  keys = [r['idempotency_key'] for r in body['rows']]
  assert len(keys) == len(set(keys)), 'a row was counted twice'
  expected = _keys_in(db, 'tenant-0', lo, hi)
  assert expected and sorted(keys) == expected
  assert body['consistency'] == 'eventual' and not body['truncated']


def test_view_rows_staleness_and_newest_complete_window(warehouse, server):
  _, db, _, _ = warehouse
  status, headers, body = get(server, '/v1/views/event_counts_1m',
                              start='2024-03-01T00:00:00Z',
                              end='2024-03-01T03:00:00Z', limit=10000)
  assert status == 200 and body['tiers'] == ['hot']
  expected = query(db, "SELECT count(*), sum(event_count), max(updated_at), "
                   "max(window_start) FROM event_counts_1m WHERE tenant_id = "
                   "'tenant-0'")[0]
  assert (len(body['rows']), sum(r['event_count'] for r in body['rows'])) == \
      expected[:2]
  staleness = (datetime.datetime.now(UTC) -
               expected[2].replace(tzinfo=UTC)).total_seconds()
  assert abs(body['staleness_seconds'] - staleness) < 30
  assert float(headers['x-staleness-seconds']) == body['staleness_seconds']
  assert body['newest_complete_window'] == expected[3].strftime(
      '%Y-%m-%dT%H:%M:%S.000000Z') == headers['x-newest-complete-window']
  assert headers['x-consistency'] == 'eventual'


def test_event_by_key_is_read_after_write_and_tenant_scoped(warehouse, server):
  _, db, _, _ = warehouse
  key_a = query(db, "SELECT idempotency_key FROM events WHERE tenant_id = "
                "'tenant-0' LIMIT 1")[0][0]
  status, headers, body = get(server, '/v1/events/' + key_a)
  assert status == 200 and body['rows'][0]['idempotency_key'] == key_a
  assert body['consistency'] == 'read-after-write' == headers['x-consistency']
  # tenant B gets the same answer as for a key that does not exist
  assert get(server, '/v1/events/' + key_a, key=B)[0] == 404
  assert get(server, '/v1/events/' + 'f' * 64)[0] == 404
  assert get(server, '/v1/events/' + key_a, key=ADMIN)[0] == 200


def _tenants(body):
  return {r['tenant_id'] for r in body['rows'] if r.get('tenant_id')}


@pytest.mark.parametrize('path, params', [
    ('/v1/events', {'start': '2024-03-01T00:00:00Z', 'end': '2024-03-02T00:00:00Z'}),
    ('/v1/views/event_counts_1m', {'start': '2024-03-01T00:00:00Z',
                                   'end': '2024-03-02T00:00:00Z'}),
    ('/v1/views/active_users_15m', {'start': '2024-03-01T00:00:00Z',
                                    'end': '2024-03-02T00:00:00Z'}),
    ('/v1/views/dead_letter_counts', {'start': '2000-01-01T00:00:00Z',
                                      'end': '2999-01-01T00:00:00Z'}),
])
def test_a_tenant_never_reads_another_tenants_rows(server, path, params):
  crafted = dict(params, limit=10000, tenant_id='tenant-1', tenant='tenant-1')
  for key, tenant in ((A, 'tenant-0'), (B, 'tenant-1')):
    status, _, body = get(server, path, key=key, **crafted)
    assert status == 200 and _tenants(body) == {tenant}, (path, key)
  status, _, body = get(server, path, key=ADMIN, **crafted)
  assert status == 200 and _tenants(body) == {'tenant-0', 'tenant-1'}


@pytest.mark.parametrize('path, params, code', [
    ('/v1/views/event_counts_1m WHERE 1=1 --', {'start': '2024-03-01T00:00:00Z',
                                                'end': '2024-03-02T00:00:00Z'}, 404),
    ('/v1/views/events', {'start': '2024-03-01T00:00:00Z',
                          'end': '2024-03-02T00:00:00Z'}, 404),
    ('/v1/views/event_counts_1m', {'start': "2024-03-01T00:00:00Z' OR '1'='1",
                                   'end': '2024-03-02T00:00:00Z'}, 400),
    ('/v1/views/event_counts_1m', {'start': '2024-03-02T00:00:00Z',
                                   'end': '2024-03-01T00:00:00Z'}, 400),
    ('/v1/views/event_counts_1m', {'start': '2024-03-01'}, 400),
    ('/v1/events', {'start': '2024-03-01T00:00:00Z', 'end': '2024-03-02T00:00:00Z',
                    'limit': 0}, 400),
    ('/v1/events', {'start': '2024-03-01T00:00:00Z', 'end': '2024-03-02T00:00:00Z',
                    'limit': 10 ** 9}, 400),
    ("/v1/events/' OR tenant_id <> '", {}, 400),
    ('/v1/events', {'start': 'x' * 3000, 'end': 'y'}, 414),
])
def test_crafted_and_malformed_requests_are_4xx(server, path, params, code):
  status, _, body = get(server, urllib.parse.quote(path), **params)
  assert status == code, body


def test_keys_and_roles(server):
  assert get(server, '/v1/catalog', key=None)[0] == 401
  assert get(server, '/v1/catalog', key='not-a-key-at-all-x')[0] == 401
  user_activity = dict(start='2024-03-01T00:00:00Z', end='2024-03-02T00:00:00Z')
  assert get(server, '/v1/views/user_activity_hourly', **user_activity)[0] == 403
  status, _, body = get(server, '/v1/views/user_activity_hourly', key=ADMIN,
                        **user_activity)
  assert status == 200 and body['rows']
  names = [v['name'] for v in get(server, '/v1/catalog')[2]['views']]
  assert names == ['active_users_15m', 'dead_letter_counts', 'event_counts_1m']


def test_a_request_body_is_refused(server):
  request = urllib.request.Request(server.url + '/v1/catalog', data=b'x' * 5000,
                                   headers={'X-API-Key': A}, method='GET')
  with pytest.raises(urllib.error.HTTPError) as refused:
    urllib.request.urlopen(request, timeout=10)
  assert refused.value.code == 413


def test_dashboard_renders_the_callers_charts_in_chromium(server):
  chromium = shutil.which('chromium') or shutil.which('chromium-browser')
  assert chromium, 'chromium is not installed (run_tests.sh installs it as root)'
  done = subprocess.run(
      [chromium, '--headless', '--no-sandbox', '--disable-gpu',
       '--virtual-time-budget=15000', '--dump-dom',
       server.url + '/#key=' + A], capture_output=True, text=True, timeout=120)
  dom = done.stdout
  assert 'data-state="rendered"' in dom, dom[-2000:]
  charts = dict(re.findall(r'id="chart-(\w+)"[^>]*data-rows="(\d+)"', dom))
  catalog = get(server, '/v1/catalog')[2]
  newest = {v['name']: v['newest_complete_window'] for v in catalog['views']}

  def api_rows(view, hours):
    end = datetime.datetime.fromisoformat(newest[view].replace('Z', '+00:00')) \
        + datetime.timedelta(minutes=1)
    start = end - datetime.timedelta(hours=hours)
    return get(server, '/v1/views/' + view, start=start.isoformat(),
               end=end.isoformat(), limit=10000)[2]['rows']
  events = api_rows('event_counts_1m', 2)
  assert int(charts['events']) == len(events) > 0
  assert int(charts['users']) == len(api_rows('active_users_15m', 6)) > 0
  letters = api_rows('dead_letter_counts', 24)
  assert int(charts['letters']) == len(letters) > 0
  bars = re.findall(r'<rect class="bar"[^>]*data-series="([^"]+)"[^>]*'
                    r'data-value="(\d+)"', dom)
  drawn = sum(int(v) for s, v in bars if s in {'page_view', 'click', 'purchase'})
  assert drawn == sum(r['event_count'] for r in events)
  # The dead-letter trend: its bars add up to the letters per minute.
  kinds = {r['error_kind'] for r in letters}
  assert sum(int(v) for s, v in bars if s in kinds) == sum(
      r['dead_letters'] for r in letters)
  # Time axes with ticks on both axes, and each bar's values on hover.
  assert len(re.findall(r'class="axis tick x"[^>]*>\d\d:\d\d<', dom)) >= 3
  assert len(re.findall(r'class="axis tick y"', dom)) >= 6
  titles = re.findall(r'<g class="bar-group"[^>]*><title>([^<]*)</title>', dom)
  assert len(titles) >= len({r['window_start'] for r in events})
  assert any(re.search(r'\d\d:\d\d\n(click|page_view|purchase): \d+', t)
             for t in titles)
  # Freshness per view, from the answers' staleness.
  fresh = dict(re.findall(r'<tr data-view="(\w+)"><td>\w+</td><td>([^<]+)</td>',
                          dom))
  assert set(fresh) == {'event_counts_1m', 'active_users_15m',
                        'dead_letter_counts'}
  assert all(value.endswith(' s') for value in fresh.values())
  assert 'cdn' not in dom.lower() and 'https://' not in dom
  # A screenshot in the tests' output folder (out/test-output/, kept).
  shot = os.path.join(ROOT, 'out', 'test-output', 'dashboard.png')
  os.makedirs(os.path.dirname(shot), exist_ok=True)
  subprocess.run(
      [chromium, '--headless', '--no-sandbox', '--disable-gpu',
       '--virtual-time-budget=15000', '--hide-scrollbars',
       '--window-size=1000,1500', '--screenshot=' + shot,
       server.url + '/#key=' + A], capture_output=True, timeout=120)
  with open(shot, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  print('dashboard screenshot: %s' % shot)


def test_api_answers_while_a_writer_commits(warehouse, server):
  """A writer process commits to the same DuckDB file in a loop (as the
  pipeline's commit step does); no request fails and the writer never does."""
  _, db, _, _ = warehouse
  writer = subprocess.Popen([sys.executable, '-c', '''
import sys, time, datetime
from transforms.sinks.duckdb_connection import connect
deadline = time.time() + 6
n = 0
while time.time() < deadline:
  con = connect(sys.argv[1])
  con.execute("BEGIN TRANSACTION")
  con.execute("INSERT OR REPLACE INTO pipeline_metrics VALUES ('writer', 'n', ?, now())", [n])
  time.sleep(0.02)
  con.execute("COMMIT")
  con.close()
  n += 1
print(n)
''', db], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  statuses = []
  deadline = time.time() + 5
  while time.time() < deadline:
    statuses.append(get(server, '/v1/views/event_counts_1m',
                        start='2024-03-01T00:00:00Z',
                        end='2024-03-01T00:10:00Z')[0])
  out, err = writer.communicate(timeout=60)
  assert writer.returncode == 0, err[-2000:]
  assert int(out) > 10, 'the writer barely ran'
  assert len(statuses) > 10 and set(statuses) == {200}


def test_load_script_reports_figures(server):
  done = run_module('serving.load', '--url', server.url, '--key', A,
                    '--seconds', '2', '--concurrency', '4')
  assert re.fullmatch(r'\d+ requests, [\d.]+ requests/s, p50 [\d.]+ ms, p99 '
                      r'[\d.]+ ms, statuses \{200: \d+\}\n', done.stdout)


def _copy(warehouse, tmp_path):
  base, db, cold, _ = warehouse
  shutil.copy(db, tmp_path / 'w.duckdb')
  shutil.copytree(cold, tmp_path / 'cold')
  return str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')


def _tiers(db, cold):
  hot = sorted(r[0] for r in query(db, 'SELECT idempotency_key FROM events'))
  files = sorted(os.path.relpath(os.path.join(d, f), cold)
                 for d, _, fs in os.walk(cold) for f in fs)
  return hot, files


def test_lifecycle_twice_gives_the_same_tiers(warehouse, tmp_path):
  db, cold = _copy(warehouse, tmp_path)
  # one cold file lost: the lifecycle job writes its old events again
  lost = sorted(os.path.join(d, f) for d, _, fs in os.walk(cold) for f in fs)[0]
  os.remove(lost)
  flags = ['--hot_sink', 'duckdb:' + db, '--cold_path', cold,
           '--hot_retention_days', '7', '--now', '2024-03-08T01:00:00Z']
  first = run_module('pipelines.lifecycle', *flags).stdout
  assert re.search(r': (\d+) events, ([1-9]\d*) copied to cold .*, \1 deleted '
                   r'from hot', first), first
  after_first = _tiers(db, cold)
  second = run_module('pipelines.lifecycle', *flags).stdout
  assert ': 0 events, 0 copied to cold' in second
  assert _tiers(db, cold) == after_first
  hot = after_first[0]
  assert hot and query(db, "SELECT min(event_time) >= TIMESTAMP "
                       "'2024-03-01 01:00:00' FROM events")[0][0]


def test_verify_holds_then_fails_on_a_warehouse_with_a_row_removed(
    warehouse, tmp_path):
  db, cold = _copy(warehouse, tmp_path)
  flags = ['--hot_sink', 'duckdb:' + db, '--cold_path', cold]
  done = run_module('pipelines.verify', *flags)
  assert done.stdout.count('\nok ') + done.stdout.startswith('ok ') == 9
  con_key = query(db, 'SELECT idempotency_key FROM events LIMIT 1')[0][0]
  import duckdb
  con = duckdb.connect(db)
  con.execute('DELETE FROM events WHERE idempotency_key = ?', [con_key])
  con.close()
  failed = run_module('pipelines.verify', *flags, check=False)
  assert failed.returncode == 1
  assert re.search(r'FAIL hot +(\d+) != (\d+)', failed.stdout)


def test_the_api_over_bigquery(warehouse, bigquery_emulator):
  """The same API over the BigQuery hot tier (the local emulator)."""
  base, db, _, keys = warehouse
  run_module('pipelines.analytics', '--input', str(base / 'data/events/*.jsonl'),
             '--profiles', str(base / 'data/profiles.jsonl'),
             '--hot_sink', 'bigquery:test-proj.serve', '--bigquery_endpoint',
             bigquery_emulator.endpoint, '--cold_path', str(base / 'cold-bq'),
             '--runner', 'FnApiRunner')
  api = ApiServer('--hot_sink', 'bigquery:test-proj.serve', '--bigquery_endpoint',
                  bigquery_emulator.endpoint, '--cold_path', str(base / 'cold-bq'),
                  '--api_keys', keys, '--hot_retention_days', '100000')
  api.start()
  try:
    day = dict(start='2024-03-01T00:00:00Z', end='2024-03-02T00:00:00Z',
               limit=10000)
    for key, tenant in ((A, 'tenant-0'), (B, 'tenant-1')):
      status, headers, body = get(api, '/v1/views/event_counts_1m', key=key, **day)
      assert status == 200 and _tenants(body) == {tenant}
      expected = query(db, 'SELECT count(*), sum(event_count) FROM '
                       'event_counts_1m WHERE tenant_id = ?', [tenant])[0]
      assert (len(body['rows']), sum(r['event_count'] for r in body['rows'])) \
          == expected
      assert body['staleness_seconds'] is not None
    status, _, body = get(api, '/v1/events', **day)
    assert status == 200 and body['tiers'] == ['hot']
    assert sorted(r['idempotency_key'] for r in body['rows']) == _keys_in(
        db, 'tenant-0', datetime.datetime(2024, 3, 1, tzinfo=UTC),
        datetime.datetime(2024, 3, 2, tzinfo=UTC))
    key = body['rows'][0]['idempotency_key']
    assert get(api, '/v1/events/' + key)[0] == 200
    assert get(api, '/v1/events/' + key, key=B)[0] == 404
    status, _, body = get(api, '/v1/views/dead_letter_counts', key=ADMIN,
                          start='2000-01-01T00:00:00Z', end='2999-01-01T00:00:00Z')
    assert status == 200 and sum(r['dead_letters'] for r in body['rows']) == \
        query(db, 'SELECT count(*) FROM dead_letters')[0][0]
  finally:
    api.stop()


def test_api_answers_while_a_streaming_run_writes(tmp_path):
  """A real streaming job (files dropped into a watched folder) commits to the
  DuckDB file while the API is asked again and again: every answer is 200 and
  the rows grow to what was dropped."""
  from tests.ingest.test_watch import _write
  incoming = tmp_path / 'incoming'
  incoming.mkdir()
  db = str(tmp_path / 'w.duckdb')
  keys = tmp_path / 'keys.json'
  keys.write_text(json.dumps({'tenant-a-reader-key': {'tenant_id': 'tenant-a',
                                                      'role': 'reader'}}))
  job = start_watch_job(incoming, db, str(tmp_path / 'cold'), 45)
  api = ApiServer('--hot_sink', 'duckdb:' + db, '--api_keys', str(keys))
  api.start()
  try:
    now = datetime.datetime.now(UTC)
    window = dict(start=(now - datetime.timedelta(hours=1)).isoformat(),
                  end=(now + datetime.timedelta(hours=1)).isoformat(), limit=10000)
    statuses, seen, dropped = [], 0, 0
    deadline = time.monotonic() + 90
    for n in range(3):
      _write(str(incoming), 'part-%d.jsonl' % n, 'tenant-a', 10, n)
      dropped += 10
      while time.monotonic() < deadline and seen < dropped:
        status, _, body = get(api, '/v1/events', key='tenant-a-reader-key',
                              **window)
        statuses.append(status)
        seen = len(body.get('rows', ())) if status == 200 else seen
        assert job.poll() is None, job.stderr.read()[-2000:]
        time.sleep(0.1)
    assert seen == dropped == 30
    assert len(statuses) > 20 and set(statuses) == {200}, statuses
  finally:
    api.stop()
    job.kill() if job.poll() is None else None
    job.wait(timeout=30)
