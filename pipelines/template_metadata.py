"""Writes `templates/metadata.json` (the flex template's parameters) from the
pipeline's own options, so the two can never drift (a test compares them).

    python -m pipelines.template_metadata > templates/metadata.json
"""
import argparse
import json
import sys

from pipelines.checks import PATTERNS
from pipelines.options import AnalyticsOptions, _flag

__all__ = ['metadata', 'EXAMPLES']

_INT = r'^[0-9]+$'
_FLOAT = r'^[0-9]+(\.[0-9]+)?$'
_SPECIAL = {
    'hot_sink': r'^(duckdb:.+|bigquery:%s)$' % PATTERNS['bigquery_dataset'],
    'profiles': r'^(bigquery:%s|[^\s]+)$' % PATTERNS['bigquery_table'],
    'redis_url': '^%s$' % PATTERNS['redis_url'],
    'bigquery_endpoint': '^%s$' % PATTERNS['bigquery_endpoint'],
    'duckdb_memory_limit': '^%s$' % PATTERNS['memory_limit'],
    'registry': r'^[^\s]+\.json$',
    'mask_fields': r'^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(,[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)*$',
    'input_subscription': '^%s$' % PATTERNS['input_subscription'],
    'input_topic': '^%s$' % PATTERNS['input_topic'],
    'kafka_bootstrap': '^%s$' % PATTERNS['kafka_bootstrap'],
    'kafka_expansion_service': r'^[\w.-]+:[0-9]+$',
    'timestamp_attribute': r'^[^\s]+$', 'kafka_topic': r'^[\w.-]+$',
    'kafka_group_id': r'^[^\s]+$',
    'input': r'^[^\s]+$', 'input_watch': r'^[^\s]+$', 'cold_path': r'^[^\s]+$',
    'run_id': '^%s$' % PATTERNS['run_id'],
}
# A valid example for options without a default (checked by the tests).
EXAMPLES = {
    'input': 'gs://my-bucket/events/*.jsonl',
    'profiles': 'bigquery:my-project.ref.profiles',
    'bigquery_endpoint': 'http://127.0.0.1:9050',
    'input_watch': 'gs://my-bucket/incoming/*.jsonl',
    'redis_url': 'redis://10.0.0.3:6379/0',
    'registry': 'schemas/avro/registry.json',
    'mask_fields': 'payload.user_id,payload.email',
    'input_subscription': 'projects/my-project/subscriptions/events',
    'input_topic': 'projects/my-project/topics/events',
    'timestamp_attribute': 'sent_at',
    'kafka_bootstrap': 'kafka-1:9092,kafka-2:9092',
    'kafka_topic': 'events',
    'kafka_expansion_service': 'localhost:8097',
    'run_id': 'hourly-20261206T10',
}


def _actions():
  parser = argparse.ArgumentParser()
  AnalyticsOptions._add_argparse_args(parser)
  return [a for a in parser._actions if a.dest != 'help']


def _regex(action):
  if action.dest in _SPECIAL:
    return _SPECIAL[action.dest]
  if action.choices:
    return '^(%s)$' % '|'.join(action.choices)
  if action.type is _flag:
    return r'^([Tt]rue|[Ff]alse)$'
  if action.type is int:
    return _INT
  if action.type is float:
    return _FLOAT
  return r'^.+$'


def metadata() -> dict:
  """The flex template metadata, one parameter per pipeline option."""
  parameters = []
  for action in _actions():
    parameters.append({
        'name': action.dest,
        'label': action.dest.replace('_', ' ').capitalize(),
        'helpText': ' '.join(action.help.split()),
        'isOptional': action.dest != 'input',
        'regexes': [_regex(action)],
    })
  return {
      'name': 'beam-realtime-analytics',
      'description': 'Contract-checked events: dedup, enrichment, event-time '
                     'views, hot and cold tiers, dead letters.',
      'parameters': parameters,
  }


def main():
  json.dump(metadata(), sys.stdout, indent=2)
  sys.stdout.write('\n')


if __name__ == '__main__':
  main()
