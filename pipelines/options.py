"""The pipeline's options, declared once, and parsed before a run starts.

`AnalyticsOptions` is the one declaration of the job's flags (the flex template's
`metadata.json` lists the same names). `parse_args` rejects unknown flags and bad
values (`checks.py`) with `UsageError`, whose one-line message names the flag,
before anything is created or written.
"""
import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.checks import HotSink, UsageError, check_values

__all__ = ['AnalyticsOptions', 'UsageError', 'parse_args', 'HotSink',
           'lookup_settings', 'help_text', 'HELP_GROUPS']


def _flag(value) -> bool:
  """A boolean flag's value: true or false (any case)."""
  if isinstance(value, bool):
    return value
  if value.lower() in ('true', 'false'):
    return value.lower() == 'true'
  raise argparse.ArgumentTypeError('expected true or false, got %r' % value)


class AnalyticsOptions(PipelineOptions):
  """Flags of `python -m pipelines.analytics` (contract section 5)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--input', default=None,
        help='File pattern of the input records: JSON lines or Avro container '
        'files, local, gs:// or s3:// (e.g. data/events/*.jsonl). Required '
        'unless another source is given.')
    parser.add_argument(
        '--input_subscription', default=None,
        help='Streaming: a Pub/Sub subscription projects/P/subscriptions/S to '
        'read (sets --streaming). Default: none.')
    parser.add_argument(
        '--input_topic', default=None,
        help='Streaming: a Pub/Sub topic projects/P/topics/T, read through a '
        'subscription Beam creates (sets --streaming). Default: none.')
    parser.add_argument(
        '--timestamp_attribute', default=None,
        help='Pub/Sub: the message attribute whose time drives the watermark '
        '(event time still comes from the envelope). Default: publish time.')
    parser.add_argument(
        '--kafka_bootstrap', default=None,
        help='Kafka: bootstrap servers host:port[,host:port] (with '
        '--kafka_topic; sets --streaming). Default: none.')
    parser.add_argument(
        '--kafka_topic', default=None,
        help='Kafka: the topic to read. Default: none.')
    parser.add_argument(
        '--kafka_group_id', default='analytics-pipeline-v2',
        help='Kafka: the consumer group. Default: analytics-pipeline-v2.')
    parser.add_argument(
        '--kafka_offset_reset', choices=['latest', 'earliest'], default='latest',
        help='Kafka: where a new consumer group starts. Default: latest.')
    parser.add_argument(
        '--kafka_max_poll_records', type=int, default=500,
        help='Kafka: records per poll at most. Default: 500.')
    parser.add_argument(
        '--kafka_commit_on_finalize', type=_flag, nargs='?', const=True,
        default=True,
        help='Kafka: commit offsets when Beam finalizes a bundle (no auto '
        'commit). Default: true.')
    parser.add_argument(
        '--kafka_expansion_service', default=None,
        help='Kafka: host:port of a running Java expansion service for '
        'ReadFromKafka. Default: Beam\'s (it fetches the Kafka IO jar).')
    parser.add_argument(
        '--profiles', default=None,
        help='User profiles: a JSON lines file (tenant_id, user_id, tier, region, '
        'updated_at) or a BigQuery table bigquery:PROJECT.DATASET.TABLE. '
        'Default: none (every event gets the unknown fallback).')
    parser.add_argument(
        '--bigquery_endpoint', default=None,
        help='BigQuery API endpoint, e.g. a local emulator '
        'http://127.0.0.1:9050 (anonymous credentials). Default: Google\'s.')
    parser.add_argument(
        '--hot_sink', default='duckdb:out/warehouse.duckdb',
        help='The hot warehouse: duckdb:PATH or bigquery:PROJECT.DATASET. '
        'Default: duckdb:out/warehouse.duckdb.')
    parser.add_argument(
        '--cold_path', default='out/cold',
        help='Root of the cold Parquet store (folder, gs:// or s3://). '
        'Default: out/cold.')
    parser.add_argument(
        '--allowed_lateness', type=int, default=3600,
        help='Seconds after a window ends that late events still update it. '
        'Default: 3600.')
    parser.add_argument(
        '--dedup_ttl', type=int, default=86400,
        help='Seconds of event time an idempotency key is remembered. '
        'Default: 86400.')
    parser.add_argument(
        '--registry', default=None,
        help='The schema registry: a registry.json (version gates per event '
        'type, schemas, upcasters) with its .avsc files beside it. Default: '
        'the one shipped in schemas/avro/.')
    parser.add_argument(
        '--mask_fields', default=None,
        help='Fields masked in dead letters and log lines (PII), comma '
        'separated paths, e.g. payload.user_id,payload.email. Masked letters '
        'cannot be replayed. Default: none.')
    parser.add_argument(
        '--dlq_alert_threshold', type=int, default=0,
        help='Alert when a run writes more than N dead letters of one kind; 0 '
        'turns it off. Default: 0.')
    parser.add_argument(
        '--dlq_alert_rate', type=float, default=0.0,
        help='Alert when dead letters of one kind exceed this share of the '
        "run's input records (0.01 = 1%%); 0 turns it off. Default: 0.")
    parser.add_argument(
        '--fail_on_dlq_alert', type=_flag, nargs='?', const=True, default=False,
        help='Exit with status 3 when a dead-letter alert fires (for CI and '
        'schedulers): --fail_on_dlq_alert or --fail_on_dlq_alert=true. '
        'Default: false.')
    parser.add_argument(
        '--early_firing_s', type=int, default=0,
        help='Streaming: seconds of processing time between the hot sink\'s '
        'commits, each of which updates the views (rows of windows the '
        'watermark has not passed are early panes); 0 means 5. Default: 0.')
    parser.add_argument(
        '--cold_max_rows_per_file', type=int, default=1000000,
        help='Rows per cold-tier Parquet file at most. Default: 1000000.')
    parser.add_argument(
        '--input_watch', default=None,
        help='Streaming: a file pattern watched for new files '
        '(fileio.MatchContinuously), e.g. incoming/*.jsonl. Default: none.')
    parser.add_argument(
        '--watch_interval_s', type=float, default=2.0,
        help='Streaming: seconds between looks at --input_watch (on the local '
        'runner, also between pulls of --input_subscription). Default: 2.')
    parser.add_argument(
        '--watch_duration_s', type=float, default=0,
        help='Streaming: stop watching --input_watch (on the local runner, '
        'reading --input_subscription) after N seconds; 0 goes on until the '
        'job is cancelled. Default: 0.')
    parser.add_argument(
        '--enrichment', choices=['side_input', 'lookup'], default='side_input',
        help='How profiles are joined: side_input (the whole file as an AsDict) '
        'or lookup (cached lookups in a profile store). Default: side_input.')
    parser.add_argument(
        '--enrichment_fallback', choices=['unknown', 'none'], default='unknown',
        help='When a lookup fails: unknown (tier and region "unknown", counted) '
        'or none (an enrichment_failed dead letter). Default: unknown.')
    parser.add_argument(
        '--cache_size', type=int, default=100000,
        help='Entries of the in-process LRU profile cache. Default: 100000.')
    parser.add_argument(
        '--cache_ttl_s', type=float, default=300.0,
        help='Seconds an in-process cache entry lives. Default: 300.')
    parser.add_argument(
        '--redis_url', default=None,
        help='Shared profile cache, redis://host:port/db. Default: none.')
    parser.add_argument(
        '--redis_ttl_s', type=int, default=3600,
        help='Seconds a Redis cache entry lives. Default: 3600.')
    parser.add_argument(
        '--lookup_timeout_s', type=float, default=2.0,
        help='Timeout of one profile store call, seconds. Default: 2.')
    parser.add_argument(
        '--lookup_max_retries', type=int, default=3,
        help='Retries of a transient lookup failure. Default: 3.')
    parser.add_argument(
        '--lookup_backoff_initial_s', type=float, default=1.0,
        help='First retry delay, seconds. Default: 1.')
    parser.add_argument(
        '--lookup_backoff_max_s', type=float, default=30.0,
        help='Longest retry delay, seconds. Default: 30.')
    parser.add_argument(
        '--lookup_backoff_multiplier', type=float, default=2.0,
        help='Growth of the retry delay. Default: 2.')
    parser.add_argument(
        '--breaker_threshold', type=int, default=5,
        help='Failed lookups in a row that open the circuit breaker. Default: 5.')
    parser.add_argument(
        '--breaker_reset_s', type=float, default=30.0,
        help='Seconds the breaker stays open before a trial call. Default: 30.')
    parser.add_argument(
        '--state_shards', type=int, default=0,
        help='Keys of each stateful step (dedup, late-data gate): each holds '
        'its share of the state, so more spread the work over more workers. '
        'Default (0): 8 per worker (--max_num_workers or --num_workers on '
        'Dataflow, --parallelism on Flink, --direct_num_workers locally), at '
        'least 8. Default: 0.')
    parser.add_argument(
        '--read_batch_size', type=int, default=5000,
        help='Records per batch read from files (in a stream, at most per '
        'batch of arriving records). Default: 5000.')
    parser.add_argument(
        '--batch_size', type=int, default=50000,
        help='Rows per staging file written to the hot warehouse at most. '
        'Default: 50000.')
    parser.add_argument(
        '--run_id', default=None,
        help='The id the run\'s counters are recorded under in '
        'pipeline_metrics (the pipeline writes them with its commits, on every '
        'runner). Default: the start time and a random suffix.')
    parser.add_argument(
        '--wait', type=_flag, nargs='?', const=True, default=False,
        help='On a runner other than the local ones (Dataflow, Flink): block '
        'until the job ends and print its final state, instead of returning '
        'once it is submitted. Default: false.')
    parser.add_argument(
        '--duckdb_memory_limit', default='auto',
        help='Memory the DuckDB commit may use (DuckDB\'s memory_limit); past '
        'it DuckDB spills rows to <warehouse>.tmp, a little slower, but the '
        'primary-key index of the rows one commit inserts must fit. auto: '
        '512MiB and 400 bytes per staged row (measured need: 230-300), at '
        'most DuckDB\'s default of 80 percent of the machine\'s memory. Default: '
        'auto.')


def _option_parser():
  """An argparse parser that knows every registered Beam option."""
  parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
  seen = set()
  stack = list(PipelineOptions.__subclasses__())
  while stack:
    cls = stack.pop()
    if cls in seen:
      continue
    seen.add(cls)
    stack.extend(cls.__subclasses__())
    try:
      cls._add_argparse_args(parser)
    except argparse.ArgumentError:
      pass  # the flag is declared by another options class too; one is enough
  return parser


def _check_unknown(argv):
  parser = _option_parser()

  def fail(message):
    raise UsageError(message)
  parser.error = fail
  _, unknown = parser.parse_known_args(argv)
  for arg in unknown:
    if arg.startswith('-'):
      raise UsageError('%s: unknown flag' % arg.split('=', 1)[0])
    raise UsageError('unexpected argument %r' % arg)


def state_shards(options) -> int:
  """How many keys each stateful step spreads its state over: `--state_shards`,
  or 8 per worker the runner will run (so every worker holds several shards,
  and a rebalance moves a small share), at least 8."""
  from apache_beam.options.pipeline_options import DirectOptions, WorkerOptions
  chosen = options.view_as(AnalyticsOptions).state_shards
  if chosen:
    return chosen
  workers = options.view_as(WorkerOptions)
  counts = [workers.max_num_workers, workers.num_workers,
            options.view_as(DirectOptions).direct_num_workers,
            options.get_all_options().get('parallelism')]
  return 8 * max([1] + [c for c in counts if isinstance(c, int) and c > 0])


def lookup_settings(opts):
  """The lookup path's settings from the options."""
  from transforms.enrich.lookup import LookupSettings
  from transforms.enrich.resilience import RetryPolicy
  return LookupSettings(
      cache_size=opts.cache_size, cache_ttl_s=opts.cache_ttl_s,
      redis_url=opts.redis_url, redis_ttl_s=opts.redis_ttl_s,
      lookup_timeout_s=opts.lookup_timeout_s,
      retry=RetryPolicy(opts.lookup_max_retries, opts.lookup_backoff_initial_s,
                        opts.lookup_backoff_max_s, opts.lookup_backoff_multiplier),
      breaker_threshold=opts.breaker_threshold,
      breaker_reset_s=opts.breaker_reset_s,
      fallback=opts.enrichment_fallback == 'unknown',
      batch_size=opts.read_batch_size)


# The groups `--help` lists the flags in; every flag is in one (a test checks).
HELP_GROUPS = (
    ('input', ('input', 'input_watch', 'watch_interval_s', 'watch_duration_s',
               'input_subscription', 'input_topic', 'timestamp_attribute',
               'kafka_bootstrap', 'kafka_topic', 'kafka_group_id',
               'kafka_offset_reset', 'kafka_max_poll_records',
               'kafka_commit_on_finalize', 'kafka_expansion_service',
               'registry', 'read_batch_size')),
    ('enrichment', ('profiles', 'enrichment', 'enrichment_fallback',
                    'cache_size', 'cache_ttl_s', 'redis_url', 'redis_ttl_s',
                    'lookup_timeout_s', 'lookup_max_retries',
                    'lookup_backoff_initial_s', 'lookup_backoff_max_s',
                    'lookup_backoff_multiplier', 'breaker_threshold',
                    'breaker_reset_s')),
    ('windows and dedup', ('allowed_lateness', 'dedup_ttl', 'early_firing_s',
                           'state_shards')),
    ('sinks', ('hot_sink', 'cold_path', 'bigquery_endpoint', 'batch_size',
               'duckdb_memory_limit', 'cold_max_rows_per_file',
               'mask_fields')),
    ('operations', ('dlq_alert_threshold', 'dlq_alert_rate',
                    'fail_on_dlq_alert', 'run_id', 'wait')),
)

_HELP_EPILOG = """\
Beam's own options are taken as well: --runner (DirectRunner by default;
DataflowRunner, FlinkRunner, PortableRunner), --streaming, --project,
--region, --temp_location, --setup_file, --max_num_workers, ... The full
list: https://beam.apache.org/releases/pydoc/current/apache_beam.options.pipeline_options.html
(a run on DataflowRunner or FlinkRunner is submitted, its id printed, and the
command returns: --wait blocks until the job ends; see docs/operations.md).
"""


def help_text(prog='python -m pipelines.analytics') -> str:
  """`--help`: every flag of `AnalyticsOptions`, grouped, with its help and
  default, and where Beam's options are."""
  flags = argparse.ArgumentParser(add_help=False)
  AnalyticsOptions._add_argparse_args(flags)
  actions = {a.dest: a for a in flags._actions}
  parser = argparse.ArgumentParser(
      prog=prog, add_help=False, epilog=_HELP_EPILOG,
      usage='%(prog)s [flags below] [Beam options]',
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description='The analytics job: records in (files, Pub/Sub, Kafka), '
      'the hot warehouse (DuckDB, BigQuery), the cold Parquet store and the '
      'dead letters out. Example:\n  %s --input \'data/events/*.jsonl\' '
      '--profiles data/profiles.jsonl \\\n      --hot_sink '
      'duckdb:out/warehouse.duckdb --cold_path out/cold' % prog)
  for title, names in HELP_GROUPS:
    group = parser.add_argument_group(title)
    for name in names:
      action = actions[name]
      group.add_argument(*action.option_strings, help=action.help,
                         metavar='true|false' if action.nargs == '?' else (
                             '|'.join(action.choices) if action.choices
                             else name.upper()))
  parser.add_argument_group('help').add_argument(
      '-h', '--help', action='store_true', help='Print this and exit.')
  return parser.format_help()


def parse_args(argv, needs_input=True) -> PipelineOptions:
  """Parses and checks the command line; raises UsageError naming the flag.
  `--help` (or `-h`) prints `help_text()` and exits 0.

  `needs_input=False` is for jobs with their own source (the replay job).
  """
  argv = list(argv)
  if '--help' in argv or '-h' in argv:
    print(help_text())
    raise SystemExit(0)
  _check_unknown(argv)
  try:
    options = PipelineOptions(argv)
    opts = options.view_as(AnalyticsOptions)
  except SystemExit:
    raise UsageError('bad flag value in %s' % ' '.join(argv)) from None
  check_values(opts, needs_input)
  return options
