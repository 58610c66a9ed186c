"""A bounded fuzz target over the decoder: `python -m benchmarks.fuzz [--seconds 30]
[--seed 1] [--out fuzz-crashes]`.

Mutates valid JSON and Avro records (truncation, byte flips, insertions,
splices, random bytes) as fast as it can for the given time and checks each one
the way the pipeline relies on: decoding never raises, and every record ends as
an event, a blank line or a dead letter holding its exact bytes. A crashing
input is written to `--out` (to be kept as a regression test) and the exit
status is 1. The whole pipeline is fuzzed by `tests/test_pipeline_fuzz.py`.
"""
import argparse
import os
import random
import sys
import time
import traceback

from producer import build_event, serialize
from schemas.records import DeadLetter, Event, RawRecord
from transforms.ingest.decode import decode_and_validate

__all__ = ['mutate', 'check', 'main']

_FACTS = [
    ('page_view', {'user_id': 'u1', 'url': '/docs', 'session_id': 's-1'}, 'v1.1'),
    ('click', {'user_id': 'u1', 'element_id': 'buy', 'url': '/'}, 'v1'),
    ('purchase', {'user_id': 'u1', 'order_id': 'o-1', 'amount': 12.5,
                  'currency': 'EUR'}, 'v1'),
]
# Valid records to mutate, built by the producer library as producers do.
SEEDS = [serialize(build_event(event_type, payload, tenant_id='acme',
                               source='web', event_time='2024-03-01T10:00:00Z',
                               ingested_at='2024-03-01T10:00:05Z',
                               schema_version=version), fmt)
         for event_type, payload, version in _FACTS for fmt in ('json', 'avro')]


def mutate(rng, data: bytes) -> bytes:
  for _ in range(rng.randint(1, 4)):
    choice = rng.randrange(5)
    at = rng.randint(0, len(data))
    if choice == 0:
      data = data[:at]
    elif choice == 1 and data:
      at = min(at, len(data) - 1)
      data = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
    elif choice == 2:
      data = data[:at] + bytes(rng.randrange(256) for _ in range(
          rng.randint(1, 8))) + data[at:]
    elif choice == 3:
      other = rng.choice(SEEDS)
      data = data[:at] + other[rng.randint(0, len(other)):]
    else:
      data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
  return data


def check(data: bytes):
  result, _ = decode_and_validate(RawRecord(data, 'fuzz:1'))
  if result is None:
    assert not data.strip(), 'a non-blank record was dropped'
  elif isinstance(result, DeadLetter):
    assert result.raw == data, 'a dead letter lost its bytes'
  else:
    assert isinstance(result, Event) and result.raw == data


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seconds', type=float, default=30)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--out', default='fuzz-crashes')
  args = parser.parse_args(argv)
  rng = random.Random(args.seed)
  deadline = time.monotonic() + args.seconds
  tried = crashes = events = 0
  while time.monotonic() < deadline:
    data = mutate(rng, rng.choice(SEEDS))
    tried += 1
    try:
      check(data)
      events += decode_and_validate(RawRecord(data))[0].__class__ is Event
    except Exception:  # a crash is the finding: keep the input, go on
      crashes += 1
      os.makedirs(args.out, exist_ok=True)
      with open(os.path.join(args.out, 'crash-%d.bin' % crashes), 'wb') as f:
        f.write(data)
      traceback.print_exc()
  print('fuzz: %d inputs in %.0f s (%.0f/s), %d still valid events, %d crashes'
        % (tried, args.seconds, tried / args.seconds, events, crashes))
  return 1 if crashes else 0


if __name__ == '__main__':
  sys.exit(main())
