"""Sample data: realistic events for N users and tenants, with retries and bad records.

    python -m pipelines.generate --out data --events 200000 [--users 500]
        [--tenants 5] [--files 4] [--seed 7] [--span_hours 6]
        [--start 2024-03-01T00:00:00Z | --start recent]

Writes `<out>/events/events-NNN.jsonl`, `<out>/profiles.jsonl` and
`<out>/manifest.json`, which states what was generated (records, blank lines,
retries, bad records per expected kind) so that tests can check the pipeline's
accounting against an independent count. Seeded: the same flags give the same
files. Valid events are built and checked by the producer library (`producer/`),
as a real producer's would be; about 30% of purchases are sent as v2.
"""
import argparse
import datetime
import json
import os
import random
import sys

from producer.envelope import build_event
from schemas.records import (MALFORMED, OVERSIZED, SCHEMA_VIOLATION,
                             UNKNOWN_EVENT_TYPE, UNSUPPORTED_SCHEMA_VERSION)
from transforms.ingest.timestamps import format_utc

__all__ = ['generate', 'make_event', 'bad_record', 'main']

_URLS = ['/', '/pricing', '/docs', '/blog/launch', '/signup', '/cart', '/checkout']
_CURRENCIES = ['EUR', 'USD', 'GBP', 'JPY']
_TIERS = ['free', 'pro', 'enterprise']
_REGIONS = ['eu-west', 'us-east', 'ap-south']
_UTC = datetime.timezone.utc


def _ts(value: datetime.datetime) -> str:
  return format_utc(value).replace('.000000Z', 'Z')


def make_event(rng, tenant, user, event_type, event_time, source='web'):
  """One valid envelope (a dict), built and checked by the producer library."""
  version = 'v1'
  if event_type == 'purchase':
    currency = rng.choice(_CURRENCIES)
    # Whole yen: JPY has no minor unit, so 12.34 JPY could not become v2's
    # amount_minor exactly (it would be a dead letter, not a sample event).
    cents = rng.randint(100, 50000) * (100 if currency == 'JPY' else 1)
    payload = {'user_id': user, 'order_id': 'o-%08x' % rng.getrandbits(32),
               'currency': currency}
    if rng.random() < 0.3:
      version, payload['amount_minor'] = 'v2', cents // (
          100 if currency == 'JPY' else 1)
    else:
      payload['amount'] = cents / 100
  elif event_type == 'click':
    payload = {'user_id': user, 'element_id': 'btn-%d' % rng.randint(1, 20),
               'url': rng.choice(_URLS)}
  else:
    payload = {'user_id': user, 'url': rng.choice(_URLS),
               'referrer': rng.choice([None, 'https://example.com/']),
               'duration_ms': rng.randint(0, 60000)}
    if rng.random() < 0.3:
      version, payload['session_id'] = 'v1.1', 's-%d' % rng.randint(1, 999)
  ingested = event_time + datetime.timedelta(seconds=rng.randint(0, 120))
  return build_event(
      event_type, payload, tenant_id=tenant, source=source,
      event_time=_ts(event_time), ingested_at=_ts(ingested),
      schema_version=version, trace_id='t-%016x' % rng.getrandbits(64))


def bad_record(rng, good: dict):
  """A bad record of a random kind: (expected kind, bytes)."""
  kind = rng.choice([OVERSIZED, MALFORMED, UNSUPPORTED_SCHEMA_VERSION,
                     UNKNOWN_EVENT_TYPE, SCHEMA_VIOLATION])
  bad = dict(good, trace_id='t-bad-%x' % rng.getrandbits(32))
  if kind == OVERSIZED:
    bad['padding'] = 'x' * 70000
  elif kind == MALFORMED:
    return kind, rng.choice([
        b'{"trace_id": "t", ', b'not json at all', b'\xef\xbb\xbf{}',
        b'{"a": NaN}', b'{"a": 1, "a": 2}', b'[1, 2, 3]', b'\xff\xfe{}'])
  elif kind == UNSUPPORTED_SCHEMA_VERSION:
    bad['schema_version'] = 'v9'
  elif kind == UNKNOWN_EVENT_TYPE:
    # v1: every type accepts it, so the version gate passes and the type is
    # what fails (a v2 'signup' would be unsupported_schema_version first).
    bad['event_type'], bad['schema_version'] = 'signup', 'v1'
  else:
    choice = rng.randint(0, 3)
    if choice == 0:
      del bad['tenant_id']
    elif choice == 1:
      bad['tenant_id'] = 'Not A Tenant'
    elif choice == 2:
      bad['payload'] = dict(bad['payload'], user_id=True)
    else:
      bad['event_time'] = '2024-01-01 00:00:00'
  return kind, json.dumps(bad).encode('utf-8')


def _profiles(rng, tenants, users):
  rows = []
  for tenant in tenants:
    for user in users:
      if rng.random() < 0.15:
        continue  # no profile: the enrichment falls back to unknown
      for version in range(rng.randint(1, 2)):
        rows.append({
            'tenant_id': tenant, 'user_id': user, 'tier': rng.choice(_TIERS),
            'region': rng.choice(_REGIONS),
            'updated_at': '2024-0%d-01T00:00:00Z' % (version + 1)})
  rng.shuffle(rows)
  return rows


def generate(out, events=1000, users=100, tenants=3, files=2, seed=7,
             start='2024-03-01T00:00:00Z', span_hours=6, duplicate_rate=0.05,
             bad_rate=0.02, blank_rate=0.002):
  """Writes the sample files; returns the manifest (what was generated)."""
  rng = random.Random(seed)
  start_time = datetime.datetime.fromisoformat(start.replace('Z', '+00:00'))
  tenant_ids = ['tenant-%d' % i for i in range(tenants)]
  user_ids = ['user-%04d' % i for i in range(users)]
  manifest = {'records': 0, 'blank_lines': 0, 'unique_events': 0,
              'duplicates': 0, 'bad': {}}
  records, emitted = [], []
  span = span_hours * 3600
  for i in range(events):
    roll = rng.random()
    if emitted and roll < duplicate_rate:
      retry = dict(rng.choice(emitted), trace_id='t-retry-%x' % rng.getrandbits(48))
      records.append(('json', retry))
      manifest['duplicates'] += 1
      continue
    event_time = start_time + datetime.timedelta(
        seconds=span * i / max(events, 1) + rng.random())
    event = make_event(rng, rng.choice(tenant_ids), rng.choice(user_ids),
                       rng.choice(['page_view', 'page_view', 'click', 'purchase']),
                       event_time)
    if roll < duplicate_rate + bad_rate:
      kind, data = bad_record(rng, event)
      manifest['bad'][kind] = manifest['bad'].get(kind, 0) + 1
      records.append(('bytes', data))
      continue
    emitted.append(event)
    manifest['unique_events'] += 1
    records.append(('json', event))
  events_dir = os.path.join(out, 'events')
  os.makedirs(events_dir, exist_ok=True)
  per_file = (len(records) + files - 1) // files
  for n in range(files):
    chunk = records[n * per_file:(n + 1) * per_file]
    _write_jsonl(os.path.join(events_dir, 'events-%03d.jsonl' % n), chunk, rng,
                 blank_rate, manifest)
  with open(os.path.join(out, 'profiles.jsonl'), 'w', encoding='utf-8') as f:
    for row in _profiles(rng, tenant_ids, user_ids):
      f.write(json.dumps(row) + '\n')
  with open(os.path.join(out, 'manifest.json'), 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  return manifest


def _write_jsonl(path, chunk, rng, blank_rate, manifest):
  with open(path, 'wb') as f:
    for kind, item in chunk:
      if rng.random() < blank_rate:
        f.write(b'   \n')
        manifest['blank_lines'] += 1
      f.write((json.dumps(item).encode('utf-8') if kind == 'json' else item) + b'\n')
      manifest['records'] += 1


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--events', type=int, default=1000)
  parser.add_argument('--users', type=int, default=100)
  parser.add_argument('--tenants', type=int, default=3)
  parser.add_argument('--files', type=int, default=2)
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--span_hours', type=float, default=6)
  parser.add_argument('--start', default='2024-03-01T00:00:00Z',
                      help='event time of the first events (RFC 3339 with Z), '
                      'or "recent": span_hours before now (for a live '
                      'stream, whose watermark follows the wall clock)')
  args = parser.parse_args(argv)
  start = args.start
  if start == 'recent':
    start = (datetime.datetime.now(_UTC) - datetime.timedelta(
        hours=args.span_hours)).strftime('%Y-%m-%dT%H:%M:%SZ')
  manifest = generate(args.out, events=args.events, users=args.users,
                      tenants=args.tenants, files=args.files, seed=args.seed,
                      span_hours=args.span_hours, start=start)
  json.dump(manifest, sys.stdout, sort_keys=True)
  print()


if __name__ == '__main__':
  main()
