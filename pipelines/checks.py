"""The checks of the pipeline's flag values, run by `options.parse_args` before
anything starts: each failure is a `UsageError` whose message names the flag."""
import gc
import logging
import os
import re
import sys

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import StandardOptions

from schemas.masking import parse_fields
from schemas.registry import load_registry
from transforms.sinks.duckdb_sink import MEMORY_LIMIT_PATTERN

__all__ = ['UsageError', 'CommandFailure', 'HotSink', 'check_values',
           'message_source', 'run_command', 'PATTERNS']

# The formats the checks enforce, written once (the flex template's parameter
# regexes are built from them too).
PATTERNS = {
    'bigquery_dataset': r'[a-z][a-z0-9-]{4,29}\.[A-Za-z0-9_]{1,1024}',
    'bigquery_table': r'[a-z][a-z0-9-]{4,29}\.\w+\.[\w-]+',
    'bigquery_endpoint': r'https?://[^\s/]+(:[0-9]+)?/?',
    'redis_url': r'rediss?://[^/\s]+(/[0-9]+)?',
    'input_subscription':
        r'projects/[a-z][a-z0-9-]{4,29}/subscriptions/[A-Za-z][\w.~+%-]{2,254}',
    'input_topic': r'projects/[a-z][a-z0-9-]{4,29}/topics/[A-Za-z][\w.~+%-]{2,254}',
    'kafka_bootstrap': r'[\w.-]+:[0-9]+(,[\w.-]+:[0-9]+)*',
    'memory_limit': MEMORY_LIMIT_PATTERN,
    'run_id': r'[\w.:-]{1,128}',
}


class CommandFailure(Exception):
  """Ends a command with one line on stderr and `exit_code`."""
  exit_code = 1

  def line(self):
    return 'error: %s' % self


class UsageError(CommandFailure, ValueError):
  """A bad flag or a missing input; the message names the flag."""
  exit_code = 2


def run_command(run, argv=None):
  """Runs a job's `run(argv)` as a command: WARNING-level logs, and a
  `CommandFailure` becomes its line on stderr and its exit status.

  The process ends when this returns, so what is alive then is frozen out of
  the garbage collector: the interpreter's exit otherwise runs its cyclic
  collections over every object importing Beam made (measured: 0.3 s after
  only importing it, 0.5-0.6 s after a run, a fifth of a small run's wall
  time). Every file and warehouse connection is closed by then; nothing
  relies on a collection at exit.
  """
  logging.getLogger().setLevel(logging.WARNING)
  try:
    run(argv)
  except CommandFailure as e:
    print(e.line(), file=sys.stderr)
    sys.exit(e.exit_code)
  finally:
    gc.freeze()


class HotSink(object):
  """A parsed `--hot_sink`: kind (`duckdb` or `bigquery`) and target."""

  def __init__(self, value):
    kind, sep, target = (value or '').partition(':')
    if not sep or not target:
      raise UsageError(
          '--hot_sink: expected duckdb:PATH or bigquery:PROJECT.DATASET, got %r'
          % value)
    if kind == 'duckdb':
      self.kind, self.target = kind, target
    elif kind == 'bigquery':
      if not re.fullmatch(PATTERNS['bigquery_dataset'], target):
        raise UsageError(
            '--hot_sink: expected bigquery:PROJECT.DATASET, got %r' % value)
      self.kind, self.target = kind, target
      self.project, self.dataset = target.split('.')
    else:
      raise UsageError('--hot_sink: unknown sink %r (expected duckdb or bigquery)'
                       % kind)


_SOURCES = ('input', 'input_watch', 'input_subscription', 'input_topic',
            'kafka_topic')


def message_source(opts) -> bool:
  """The input is Pub/Sub or Kafka (unbounded: the job streams)."""
  return bool(opts.input_subscription or opts.input_topic or opts.kafka_topic)


def _check_message_source(opts):
  for flag, shape in (('input_subscription', 'projects/P/subscriptions/S'),
                      ('input_topic', 'projects/P/topics/T'),
                      ('kafka_bootstrap', 'host:port[,host:port]')):
    value = getattr(opts, flag)
    if value and not re.fullmatch(PATTERNS[flag], value):
      raise UsageError('--%s: expected %s, got %r' % (flag, shape, value))
  if bool(opts.kafka_topic) != bool(opts.kafka_bootstrap):
    raise UsageError('--kafka_bootstrap: give it together with --kafka_topic')
  if opts.kafka_max_poll_records < 1:
    raise UsageError('--kafka_max_poll_records: must be >= 1')
  # A message source is unbounded: the job streams (the flex template cannot
  # pass --streaming as a value, so it follows from the source).
  opts.view_as(StandardOptions).streaming = True


def _check_input(opts):
  given = [flag for flag in _SOURCES if getattr(opts, flag)]
  if len(given) > 1:
    raise UsageError('--%s: give one source, not also --%s' % (
        given[1], given[0]))
  if message_source(opts) or opts.kafka_bootstrap:
    _check_message_source(opts)
  elif opts.input_watch:
    if opts.input:
      raise UsageError('--input_watch: give either --input or --input_watch')
    if not opts.view_as(StandardOptions).streaming:
      raise UsageError('--input_watch: needs --streaming')
  else:
    if not opts.input:
      raise UsageError('--input: required (a file pattern of input records)')
    if not FileSystems.match([opts.input])[0].metadata_list:
      raise UsageError('--input: no file matches %r' % opts.input)


def check_values(opts, needs_input=True):
  """Raises UsageError, naming the flag, for the first bad value."""
  if needs_input:
    _check_input(opts)
  if opts.early_firing_s < 0:
    raise UsageError('--early_firing_s: must be >= 0')
  if opts.cold_max_rows_per_file < 1:
    raise UsageError('--cold_max_rows_per_file: must be >= 1')
  if opts.watch_interval_s <= 0:
    raise UsageError('--watch_interval_s: must be > 0')
  if opts.profiles and opts.profiles.startswith('bigquery:'):
    if not re.fullmatch('bigquery:' + PATTERNS['bigquery_table'],
                        opts.profiles):
      raise UsageError('--profiles: expected bigquery:PROJECT.DATASET.TABLE, '
                       'got %r' % opts.profiles)
  elif opts.profiles and not FileSystems.exists(opts.profiles):
    raise UsageError('--profiles: no such file %r' % opts.profiles)
  if opts.bigquery_endpoint and not re.fullmatch(
      PATTERNS['bigquery_endpoint'], opts.bigquery_endpoint):
    raise UsageError('--bigquery_endpoint: expected http(s)://host:port, got %r'
                     % opts.bigquery_endpoint)
  HotSink(opts.hot_sink)
  if not opts.cold_path:
    raise UsageError('--cold_path: must not be empty')
  for flag in ('allowed_lateness', 'dedup_ttl', 'state_shards'):
    if getattr(opts, flag) < 0:
      raise UsageError('--%s: must be >= 0, got %d' % (flag, getattr(opts, flag)))
  if opts.enrichment == 'lookup' and not opts.profiles:
    raise UsageError('--profiles: required with --enrichment lookup')
  if opts.redis_url and not re.fullmatch(PATTERNS['redis_url'],
                                         opts.redis_url):
    raise UsageError('--redis_url: expected redis://host:port/db, got %r'
                     % opts.redis_url)
  for flag in ('cache_size', 'breaker_threshold'):
    if getattr(opts, flag) < 1:
      raise UsageError('--%s: must be >= 1' % flag)
  for flag in ('cache_ttl_s', 'lookup_timeout_s', 'lookup_backoff_initial_s',
               'lookup_backoff_max_s', 'breaker_reset_s', 'redis_ttl_s'):
    if getattr(opts, flag) <= 0:
      raise UsageError('--%s: must be > 0' % flag)
  if opts.lookup_max_retries < 0 or opts.lookup_backoff_multiplier < 1:
    raise UsageError('--lookup_max_retries must be >= 0 and '
                     '--lookup_backoff_multiplier >= 1')
  if opts.registry:
    _check_registry(opts.registry)
  if opts.mask_fields:
    try:
      parse_fields(opts.mask_fields)
    except ValueError as e:
      raise UsageError('--mask_fields: %s' % e)
  if opts.dlq_alert_threshold < 0:
    raise UsageError('--dlq_alert_threshold: must be >= 0, got %d'
                     % opts.dlq_alert_threshold)
  if not 0 <= opts.dlq_alert_rate <= 1:
    raise UsageError('--dlq_alert_rate: must be a share between 0 and 1, got %s'
                     % opts.dlq_alert_rate)
  if opts.read_batch_size < 1:
    raise UsageError('--read_batch_size: must be >= 1, got %d' % opts.read_batch_size)
  if opts.batch_size < 1:
    raise UsageError('--batch_size: must be >= 1, got %d' % opts.batch_size)
  if opts.run_id and not re.fullmatch(PATTERNS['run_id'], opts.run_id):
    raise UsageError('--run_id: letters, digits and . _ : - only (at most 128), '
                     'got %r' % opts.run_id)
  if not re.fullmatch(PATTERNS['memory_limit'], opts.duckdb_memory_limit):
    raise UsageError('--duckdb_memory_limit: expected auto or a size such as '
                     '1GB or 512MB, got %r' % opts.duckdb_memory_limit)


def _check_registry(path):
  """Loads the registry once before the run, so a broken one stops it here."""
  if not os.path.isfile(path):
    raise UsageError('--registry: no such local file %r' % path)
  try:
    load_registry(path)
  except (OSError, ValueError, KeyError) as e:
    raise UsageError('--registry: %s is not a usable registry: %s' % (path, e))
