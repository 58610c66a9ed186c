"""Security: named fields masked in dead letters and logs, no secret in the
repository, the template or the serving layer's logs."""
import json
import re
import subprocess
import urllib.error
import urllib.request

from pipelines.template_metadata import metadata
from schemas.records import DeadLetter, SCHEMA_VIOLATION
from schemas.rows import dead_letter_id, dead_letter_row
from tests.cli import ROOT, query, run_module
from tests.helpers import as_json, envelope
from tests.servers import ApiServer
from schemas.masking import parse_fields

PERSONAL = 'alice@example.com'


def test_masked_letter_hides_the_fields_and_keeps_a_stable_id():
  raw = as_json(envelope(payload__user_id=PERSONAL, payload__duration_ms=-5))
  letter = DeadLetter.of(SCHEMA_VIOLATION, 'user %s: payload.duration_ms: must '
                         'be >= 0' % PERSONAL, raw, 'a.jsonl:1')
  row = dead_letter_row(letter, None, parse_fields('payload.user_id'))
  assert PERSONAL not in row['raw'] and PERSONAL not in row['error_message']
  assert json.loads(row['raw'])['payload']['user_id'] == '***'
  assert row['raw_encoding'] == 'masked-utf-8'
  assert row['dead_letter_id'] == dead_letter_id(SCHEMA_VIOLATION, 'a.jsonl:1', raw)
  unreadable = dead_letter_row(letter._replace(raw=b'{"user_id": "' +
                                               PERSONAL.encode() + b'", oops'),
                               None, parse_fields('payload.user_id'))
  assert unreadable['raw'].startswith('sha256:')
  assert unreadable['raw_encoding'] == 'masked-sha256'


def test_pipeline_masks_dead_letters_and_replay_skips_them(tmp_path):
  lines = [as_json(envelope(payload__user_id=PERSONAL, payload__duration_ms=-5)),
           b'{"payload": {"user_id": "' + PERSONAL.encode() + b'"}, broken',
           as_json(envelope(payload__user_id='bob'))]
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'a.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
  db = str(tmp_path / 'w.duckdb')
  flags = ['--hot_sink', 'duckdb:' + db, '--cold_path', str(tmp_path / 'cold'),
           '--runner', 'FnApiRunner']
  done = run_module('pipelines.analytics', '--input', str(tmp_path / 'in/*.jsonl'),
                    '--mask_fields', 'payload.user_id,payload.email', *flags)
  assert PERSONAL not in done.stdout + done.stderr
  rows = query(db, 'SELECT raw, raw_encoding, error_message FROM dead_letters '
               'ORDER BY raw_encoding')
  assert [r[1] for r in rows] == ['masked-sha256', 'masked-utf-8']
  assert not any(PERSONAL in ' '.join(r) for r in rows)
  out = run_module('pipelines.replay', *flags).stdout
  assert 'replayed 0' in out


def test_bad_mask_fields_flag_names_the_flag(tmp_path):
  (tmp_path / 'a.jsonl').write_bytes(as_json(envelope()) + b'\n')
  done = run_module('pipelines.analytics', '--input', str(tmp_path / 'a.jsonl'),
                    '--mask_fields', 'payload.user id', check=False)
  assert done.returncode == 2 and done.stderr.startswith('error: --mask_fields: ')


_PATTERNS = [re.compile(p) for p in (
    '-----BEGIN ' + '[A-Z ]*PRIVATE KEY-----', 'AKIA' + '[0-9A-Z]{16}',
    'AIza' + r'[0-9A-Za-z_\-]{35}', 'xox' + '[baprs]-[0-9A-Za-z-]{10,}',
    r'(?i)(password|passwd|secret)\s*[=:]\s*["\'][^"\'\s]{6,}["\']',
    r'rediss?://[^\s:@/]*:[^\s@/]+@')]


def test_no_secret_in_the_repository_or_the_template():
  files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
  assert files, 'not a git checkout'
  found = []
  for name in files:
    try:
      text = open('%s/%s' % (ROOT, name), encoding='utf-8').read()
    except (UnicodeDecodeError, FileNotFoundError):
      continue
    found += ['%s: %s' % (name, p.pattern) for p in _PATTERNS if p.search(text)]
  assert found == []
  names = [p['name'] for p in metadata()['parameters']]
  assert not [n for n in names if re.search(r'password|secret|token|api_key', n)]


def test_api_keys_never_reach_the_servers_output(tmp_path):
  keys = {'the-real-key-0123456789': {'tenant_id': 't', 'role': 'reader'}}
  api = ApiServer('--hot_sink', 'duckdb:' + str(tmp_path / 'none.duckdb'),
                  env={'ANALYTICS_API_KEYS': json.dumps(keys)})
  api.start()
  try:
    for key in ('the-real-key-0123456789', 'a-wrong-key-9876543210'):
      request = urllib.request.Request(api.url + '/v1/catalog',
                                       headers={'X-API-Key': key})
      try:
        urllib.request.urlopen(request, timeout=10).read()
      except urllib.error.HTTPError as e:
        assert e.code == 401
  finally:
    process = api.process
    api.stop()
  output = process.stderr.read().decode()
  assert 'the-real-key' not in output and 'a-wrong-key' not in output


def test_api_keys_file_is_checked_without_echoing_keys():
  import pytest
  from serving.config import load_api_keys
  for bad in ({'short': {'tenant_id': 't', 'role': 'reader'}},
              {'a-long-enough-key-1': {'tenant_id': '../../etc', 'role': 'reader'}},
              {'a-long-enough-key-2': {'tenant_id': 't', 'role': 'owner'}}):
    with pytest.raises(ValueError) as refused:
      load_api_keys(environ={'ANALYTICS_API_KEYS': json.dumps(bad)})
    assert list(bad)[0] not in str(refused.value)
  with pytest.raises(ValueError, match='no API keys'):
    load_api_keys(environ={})
