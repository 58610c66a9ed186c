"""The replay job and dead-letter alerts, end to end on the real command lines.

The run: good events, and letters a repair or a registry change can fix (a BOM,
a lower-case currency, a purchase v2 sent while the gate refused v2, a BOM copy
of a stored event), and one nothing can fix. Replayed twice: the fixable ones
land once, the other stays with its replay_count raised, totals add up.
"""
import json
import shutil

import pytest

from schemas.registry import AVRO_DIR
from tests.cli import metrics, query, run_module
from tests.helpers import as_json, envelope

BOM = b'\xef\xbb\xbf'


def _v2_purchase():
  event = envelope('purchase', schema_version='v2', trace_id='t-v2')
  event['payload'] = {'user_id': 'u2', 'order_id': 'o-v2', 'amount_minor': 999,
                      'currency': 'EUR'}
  from schemas.keys import idempotency_key
  event['idempotency_key'] = idempotency_key('web', 'purchase', 'o-v2',
                                             event['event_time'])
  return event


@pytest.fixture
def warehouse(tmp_path):
  """The first run, with a registry whose gate refuses purchase v2."""
  good = [envelope(payload__url='/%d' % n, trace_id='t-%d' % n) for n in range(3)]
  lines = [as_json(e) for e in good] + [
      BOM + as_json(envelope(payload__url='/bom', trace_id='t-bom')),
      as_json(envelope('purchase', payload__currency='eur', tenant_id='other')),
      as_json(_v2_purchase()),
      BOM + as_json(dict(good[0], trace_id='t-retry')),  # lands as already stored
      b'not json at all',
  ]
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'a.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
  registry = tmp_path / 'registry'
  shutil.copytree(AVRO_DIR, registry)
  config = json.loads((registry / 'registry.json').read_text())
  config['event_types']['purchase']['accept'] = ['v1.*']
  (registry / 'registry.json').write_text(json.dumps(config))
  db = str(tmp_path / 'w.duckdb')
  flags = ['--hot_sink', 'duckdb:' + db, '--cold_path', str(tmp_path / 'cold'),
           '--runner', 'FnApiRunner']
  run_module('pipelines.analytics', '--input', str(tmp_path / 'in' / '*.jsonl'),
             '--registry', str(registry / 'registry.json'), *flags)
  return db, flags


def _letters(db):
  return query(db, 'SELECT error_kind, replay_count, replayed_at IS NOT NULL '
               'FROM dead_letters ORDER BY 1, 2, 3')


def test_replay_twice_lands_repaired_records_once(warehouse):
  db, flags = warehouse
  first = metrics(db)
  assert (first['input_records'], first['events_written'],
          first['dead_letters']) == (8, 3, 5)
  assert sorted(k for k, _, _ in _letters(db)) == [
      'malformed', 'malformed', 'malformed', 'schema_violation',
      'unsupported_schema_version']

  out = run_module('pipelines.replay', *flags).stdout
  assert 'replayed 5 (repaired 3): landed 4 (events written 3, duplicates or ' \
         'already stored 1), still failing 1' in out
  assert query(db, 'SELECT count(*) FROM events')[0][0] == 6
  assert _letters(db) == [('malformed', 1, False), ('malformed', 1, True),
                          ('malformed', 1, True), ('schema_violation', 1, True),
                          ('unsupported_schema_version', 1, True)]
  # the v2 purchase landed upcast-free, the currency repaired, in both tiers
  payloads = dict(query(db, "SELECT trace_id, payload FROM events "
                        "WHERE event_type = 'purchase'"))
  assert json.loads(payloads['t-v2'])['amount_minor'] == 999
  assert json.loads(payloads['t-1'])['currency'] == 'EUR'
  cold = query(db, "SELECT count(*) FROM read_parquet('%s/events/**/*.parquet', "
               "hive_partitioning = true)" % flags[3])[0][0]
  assert cold == 6

  out = run_module('pipelines.replay', *flags).stdout
  assert 'replayed 1 (repaired 0): landed 0 (events written 0, duplicates or ' \
         'already stored 0), still failing 1' in out
  assert query(db, 'SELECT count(*) FROM events')[0][0] == 6
  assert query(db, "SELECT replay_count, raw, error_message FROM dead_letters "
               "WHERE replayed_at IS NULL") == [
      (2, 'not json at all', 'not JSON: Expecting value: line 1 column 1 (char 0)')]
  # totals: input = events + duplicates (first run and replays) + letters waiting
  replays = query(db, "SELECT sum(value) FROM pipeline_metrics "
                  "WHERE name = 'replay_duplicates'")[0][0]
  waiting = query(db, "SELECT count(*) FROM dead_letters WHERE replayed_at IS "
                  "NULL AND error_kind <> 'late_event'")[0][0]
  assert first['input_records'] == 6 + first['duplicates'] + replays + waiting


def test_replay_filters_and_flags(warehouse):
  db, flags = warehouse
  out = run_module('pipelines.replay', *flags, '--tenant', 'other',
                   '--repair', 'none').stdout
  assert 'replayed 1 (repaired 0): landed 0' in out  # the currency, unrepaired
  out = run_module('pipelines.replay', *flags, '--kind', 'schema_violation').stdout
  assert 'replayed 1 (repaired 1): landed 1' in out
  out = run_module('pipelines.replay', *flags, '--since',
                   '2999-01-01T00:00:00Z').stdout
  assert 'replayed 0' in out
  for bad, flag in ((['--kind', 'late_event'], '--kind'),
                    (['--repair', 'magic'], '--repair'),
                    (['--since', 'yesterday'], '--since')):
    done = run_module('pipelines.replay', *flags, *bad, check=False)
    assert done.returncode == 2 and done.stderr.startswith('error: %s: ' % flag)


def test_dead_letter_depth_rate_and_alerts(warehouse, tmp_path):
  db, flags = warehouse
  counts = metrics(db)
  assert counts['dlq_depth_malformed'] == 3
  assert counts['dlq_rate_ppm_malformed'] == 3 * 1000000 // 8
  args = ['pipelines.analytics', '--input', str(tmp_path / 'in' / '*.jsonl'),
          *flags, '--dlq_alert_threshold', '2', '--dlq_alert_rate', '0.2']
  done = run_module(*args)
  assert 'ALERT dead letters: malformed: 3 dead letters, above ' \
         '--dlq_alert_threshold 2' in done.stdout
  assert 'ALERT dead letters: malformed: 37.50% of 8 input records, above ' \
         '--dlq_alert_rate 20.00%' in done.stdout
  done = run_module(*args, '--fail_on_dlq_alert', check=False)
  assert done.returncode == 3
  assert 'failing: 2 dead-letter alert(s) fired' in done.stderr
  quiet = run_module(*args[:-4], '--dlq_alert_threshold', '3',
                     '--fail_on_dlq_alert=true')
  assert 'ALERT' not in quiet.stdout
