"""Sends business facts as events: `python -m producer --to DEST < facts.jsonl`.

Each input line is one fact: `{"event_type": ..., "tenant_id": ..., "source": ...,
"event_time": ..., "payload": {...}}` (optionally `schema_version`, `trace_id`).
DEST is `file:PATH`, `pubsub:projects/P/topics/T` or `kafka:HOST:PORT/TOPIC`.
A fact that breaks the contract is refused before sending: its line number and
the field are printed, nothing of it is sent, and the exit status is 1.
"""
import argparse
import json
import sys

from producer.client import Producer
from producer.emitters import FileEmitter, KafkaEmitter, PubSubEmitter
from producer.envelope import ContractError
from producer.serialize import FORMATS

__all__ = ['main', 'emitter_for']

_FACT_FIELDS = ('tenant_id', 'source', 'event_time', 'schema_version', 'trace_id',
                'ingested_at')


def emitter_for(dest: str):
  """The emitter a `--to` value names; ValueError naming the flag otherwise."""
  kind, _, target = dest.partition(':')
  if kind == 'file' and target:
    return FileEmitter(target)
  if kind == 'pubsub' and target.startswith('projects/') and '/topics/' in target:
    return PubSubEmitter(target)
  if kind == 'kafka' and '/' in target:
    bootstrap, _, topic = target.rpartition('/')
    return KafkaEmitter(bootstrap, topic)
  raise ValueError('--to: expected file:PATH, pubsub:projects/P/topics/T or '
                   'kafka:HOST:PORT/TOPIC, got %r' % dest)


def main(argv=None, stdin=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--to', required=True)
  parser.add_argument('--format', choices=FORMATS, default='json')
  parser.add_argument('--facts', default='-', help='JSON lines; - is stdin')
  parser.add_argument('--registry', default=None)
  args = parser.parse_args(argv)
  try:
    emitter = emitter_for(args.to)
  except ValueError as e:
    parser.error(str(e))
  stream = (stdin or sys.stdin) if args.facts == '-' else open(
      args.facts, encoding='utf-8')
  refused = 0
  with Producer(emitter, args.format, args.registry) as producer:
    for number, line in enumerate(stream, 1):
      if not line.strip():
        continue
      try:
        fact = json.loads(line)
        if not isinstance(fact, dict):
          raise ContractError('malformed', 'a fact must be a JSON object')
        for name in ('event_type', 'payload', 'tenant_id', 'source', 'event_time'):
          if name not in fact:
            raise ContractError('schema_violation', '%s: missing' % name)
        producer.send(fact.get('event_type'), fact.get('payload'),
                      **{k: fact[k] for k in _FACT_FIELDS if k in fact})
      except (ContractError, ValueError, TypeError) as e:
        refused += 1
        print('line %d refused: %s' % (number, e), file=sys.stderr)
  print('sent %d, refused %d' % (producer.sent, refused))
  return 1 if refused else 0


if __name__ == '__main__':
  sys.exit(main())
