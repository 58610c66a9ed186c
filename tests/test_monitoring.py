"""Monitoring: `/metrics` in the Prometheus text format, the shipped alert
rules checked by `promtool`, and a real Prometheus (Debian's 2.42) scraping
a real serving process on loopback: a run that adds dead letters makes the
dead-letter alert pending, then firing; a replay that lands them resolves
it. The Cloud Monitoring policies for Dataflow are checked as data."""
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

from tests.cli import ROOT, run_module
from tests.helpers import as_json, envelope
from tests.servers import ApiServer, PrometheusServer

RULES = os.path.join(ROOT, 'templates', 'monitoring', 'prometheus-rules.yml')
POLICIES = os.path.join(ROOT, 'templates', 'monitoring',
                        'cloud-monitoring-policies.json')
ADMIN = 'a' * 32
READER = 'r' * 32
KEYS = json.dumps({ADMIN: {'tenant_id': 'acme', 'role': 'admin'},
                   READER: {'tenant_id': 'acme', 'role': 'reader'}})


def test_shipped_rules_pass_promtool():
  done = subprocess.run(['promtool', 'check', 'rules', RULES],
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'SUCCESS: 5 rules found' in done.stdout


def _purchase(order, currency, minute=5):
  text = '2024-03-01T10:%02d:10Z' % minute
  return as_json(envelope('purchase', event_time=text, ingested_at=text,
                          payload__order_id=order, payload__currency=currency,
                          trace_id='t-' + order))


def _run(folder, name, lines, db):
  path = folder / ('%s.jsonl' % name)
  path.write_bytes(b'\n'.join(lines) + b'\n')
  run_module('pipelines.analytics', '--input', str(path), '--hot_sink',
             'duckdb:' + db, '--cold_path', db + '.cold', '--runner',
             'FnApiRunner')


def _get(url, headers=None):
  request = urllib.request.Request(url, headers=headers or {})
  try:
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.status, response.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


def test_metrics_need_an_admin_key_and_hold_no_rows(tmp_path):
  db = str(tmp_path / 'w.duckdb')
  _run(tmp_path, 'a', [_purchase('ok-%d' % i, 'EUR') for i in range(3)]
       + [_purchase('bad-%d' % i, 'eur') for i in range(2)] + [b'{bad'], db)
  server = ApiServer('--hot_sink', 'duckdb:' + db, env={
      'ANALYTICS_API_KEYS': KEYS}).start()
  try:
    assert _get(server.url + '/metrics')[0] == 401
    assert _get(server.url + '/metrics', {'X-API-Key': READER})[0] == 403
    status, text = _get(server.url + '/metrics',
                        {'Authorization': 'Bearer ' + ADMIN})
  finally:
    server.stop()
  assert status == 200
  series = dict(re.findall(r'^(analytics_[^ ]+) (\S+)$', text, re.M))
  assert series['analytics_dead_letters_written_total{kind="schema_violation"}'] \
      == '2.0'
  assert series['analytics_dead_letters_written_total{kind="malformed"}'] == '1.0'
  assert series['analytics_dead_letters_written_total{kind="late_event"}'] == '0.0'
  assert series['analytics_dead_letters_waiting{kind="schema_violation",'
                'tenant="acme"}'] == '2.0'
  assert series['analytics_events_written_total{tenant="acme"}'] == '3.0'
  assert series['analytics_job_last_run_success{pipeline_job="analytics"}'] \
      == '1.0'
  assert float(series['analytics_job_last_run_duration_seconds'
                      '{pipeline_job="analytics"}']) > 0
  assert float(series['analytics_dead_letters_oldest_waiting_age_seconds'
                      '{kind="schema_violation"}']) >= 0
  assert 'analytics_table_freshness_seconds{table="events"}' in series
  assert 'analytics_view_newest_complete_window_start_timestamp_seconds' \
      '{view="event_counts_1m"}' in series
  assert 'analytics_lookup_cache_hits_total' in series
  # Aggregates only: no key, order or payload of any row.
  assert 'ok-0' not in text and 'idempotency' not in text and '{bad' not in text


def _test_rules(folder):
  """The shipped rules with the waits of a test: `for` in seconds."""
  with open(RULES) as f:
    text = f.read()
  text = re.sub(r'for: \d+m', 'for: 2s', text)
  path = os.path.join(folder, 'rules.yml')
  with open(path, 'w') as f:
    f.write(text)
  return path


def _alert(prometheus, name):
  states = [a['state'] for a in prometheus.api('alerts')['alerts']
            if a['labels']['alertname'] == name]
  return states[0] if states else 'inactive'


def _wait_for(check, what, seconds=60):
  seen = []
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    value = check()
    if not seen or seen[-1] != value:
      seen.append(value)
    if value == what:
      return seen
    time.sleep(0.2)
  raise AssertionError('waited for %r, saw %r' % (what, seen))


def test_prometheus_fires_the_dead_letter_alert_and_a_replay_resolves_it(
    tmp_path):
  db = str(tmp_path / 'w.duckdb')
  _run(tmp_path, 'first', [_purchase('ok-%d' % i, 'EUR') for i in range(3)], db)
  server = ApiServer('--hot_sink', 'duckdb:' + db, env={
      'ANALYTICS_API_KEYS': KEYS}).start()
  prometheus = None
  try:
    (tmp_path / 'prom').mkdir()
    prometheus = PrometheusServer(str(tmp_path / 'prom'), '''
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: analytics-serving
    metrics_path: /metrics
    authorization:
      credentials: %s
    static_configs:
      - targets: ['127.0.0.1:%d']
''' % (_test_rules(str(tmp_path)), ADMIN, server.port)).start()

    def written():
      result = prometheus.api('query?query=sum(analytics_dead_letters_written'
                              '_total%7Bkind%3D%22schema_violation%22%7D)')
      return result['result'][0]['value'][1] if result['result'] else None
    _wait_for(written, '0')  # scraped, no letters yet
    time.sleep(2)  # a few samples at 0: what comes next is an increase
    _run(tmp_path, 'bad', [_purchase('ok-9', 'EUR', 6)] + [
        _purchase('fix-%d' % i, 'eur', 6) for i in range(12)], db)
    states = _wait_for(lambda: _alert(prometheus, 'DeadLettersArriving'),
                       'firing')
    assert states[-2:] == ['pending', 'firing'], states
    run_module('pipelines.replay', '--hot_sink', 'duckdb:' + db,
               '--cold_path', db + '.cold', '--runner', 'FnApiRunner')
    _wait_for(lambda: _alert(prometheus, 'DeadLettersArriving'), 'inactive')
    # The replay run is recorded, and its job's last run is a success.
    result = prometheus.api('query?query=analytics_job_last_run_success')
    assert {r['metric']['pipeline_job']: r['value'][1]
            for r in result['result']} == {
        'analytics': '1', 'replay': '1'}
  finally:
    if prometheus is not None:
      prometheus.stop()
    server.stop()


def test_cloud_monitoring_policies_name_the_metrics_the_pipeline_emits():
  """Dataflow: one policy per condition of the Prometheus rules, on the
  Beam counters the pipeline emits (`transforms/counters.py`) and Pub/Sub's
  and Dataflow's own metrics; valid JSON in the Monitoring API's shape."""
  from transforms import counters
  with open(POLICIES) as f:
    policies = json.load(f)
  assert len(policies) >= 5
  names = set()
  for policy in policies:
    assert policy['displayName'] and policy['combiner'] in ('OR', 'AND')
    assert policy['documentation']['content']
    for condition in policy['conditions']:
      threshold = condition['conditionThreshold']
      assert threshold['comparison'].startswith('COMPARISON_')
      assert re.fullmatch(r'\d+s', threshold['duration'])
      names.update(re.findall(r'metric\.type="([^"]+)"', threshold['filter']))
      names.update(re.findall(r'metric\.labels\.metric_name="([^"]+)"',
                              threshold['filter']))
  assert {'dataflow.googleapis.com/job/user_counter',
          'dataflow.googleapis.com/job/system_lag',
          'dataflow.googleapis.com/job/data_watermark_age',
          'pubsub.googleapis.com/subscription/oldest_unacked_message_age',
          'pubsub.googleapis.com/subscription/dead_letter_message_count',
          counters.DEAD_LETTERS, counters.EVENTS_WRITTEN} <= names
