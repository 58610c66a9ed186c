"""The pipeline's graph: `build(pipeline, options, source=...)`.

One graph for every runner and both modes, one element type per stage:

    records ---- batches of records (`transforms/ingest/batched.py`)
      -> DecodeAndValidate: an events batch per batch of records, an Arrow
         table (`schemas.rows.EVENT_BATCH_SCHEMA`), and dead letters
      -> Dedup, JoinBatches -> Enrich -> LateDataGate -> EventRows -> sinks

Each stage meets its runner's needs inside itself, from the options:

* files are read a batch at a time; a stream is batched as it arrives,
  within each bundle; decoding runs in a helper process too when there is
  one local worker and the input is bounded
  (`transforms/ingest/parallel_decode.py`);
* dedup (`transforms/dedup/shards.py`) splits each batch over
  `--state_shards` keys; on bounded input a shard's keys are dropped once at
  the end, in a stream each key expires by itself after the TTL;
* the late-data gate (`transforms/views/late_gate.py`) marks, in a stream,
  each event with the views it came too late for, over the same number of
  keys; on bounded input nothing is late and it passes batches through;
* the sinks commit once at the end of bounded input, every
  `--early_firing_s` in a stream; the views are maintained by the hot
  sink's commit from the events it newly stores (`transforms/views/sql.py`)
  and the cold tier is written from what the commit stored
  (`transforms/sinks/cold_sink.py`), so both stay exact whatever the
  history of runs.

Where each stage lives: `docs/architecture.md`.
"""
import datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import StandardOptions

from pipelines.options import (AnalyticsOptions, HotSink, lookup_settings,
                               state_shards)
from schemas import tables
from schemas.rows import dead_letter_row, table_rows
from transforms.ingest import batched
from transforms.dedup import shards as batched_dedup
from transforms.event_batches import with_processed_at
from transforms.sinks.cold_sink import COLD_FILES
from transforms.sinks.dead_letters import CollectDeadLetters
from transforms.ingest.decode import DEAD_LETTER_TAG
from transforms.sinks.bigquery_sink import WriteToBigQueryWarehouse
from transforms.sinks.duckdb_sink import WriteToDuckDB
from transforms.enrich.side_input import EnrichFromSideInput, ReadProfiles
from transforms.enrich.lookup import ENRICHMENT_FAILED_TAG, EnrichWithLookups
from transforms.ingest.local_pubsub import HeldInBigQuery, HeldInDuckDB, LocalPubSubRead
from transforms.ingest.local_watch import LocalFileWatch
from schemas.masking import parse_fields
from transforms.ingest.parallel_decode import DecodeTables
from transforms.ingest.message_sources import (ReadKafkaRecords, ReadPubSubRecords,
                                        kafka_consumer_config)
from transforms.ingest.sources import ReadRecords, WatchRecords
from transforms.enrich.stores import profile_store
from transforms.tallies import TALLIES
from transforms.views.late_gate import FLOORS, LateDataGate, ViewPolicy

__all__ = ['build', 'stages', 'sinks', 'utcnow', 'is_local', 'runs_here',
           'new_run_id']


def utcnow():
  return datetime.datetime.now(datetime.timezone.utc)


def is_local(options) -> bool:
  """The DirectRunner (or one of its local runners by name)."""
  return options.view_as(StandardOptions).runner in _LOCAL_RUNNERS


def runs_here(options) -> bool:
  """The job runs in this process: a local runner, or PortableRunner with
  LOOPBACK workers (which live in the launching process). Anything else
  (Dataflow, Flink) is submitted and runs elsewhere."""
  from apache_beam.options.pipeline_options import PortableOptions
  runner = options.view_as(StandardOptions).runner
  if runner in _LOCAL_RUNNERS + ('FnApiRunner',):
    return True
  return runner == 'PortableRunner' and (
      options.view_as(PortableOptions).environment_type or '').upper() == \
      'LOOPBACK'


def new_run_id() -> str:
  """A run's id: its start time (sortable) and a random suffix."""
  import uuid
  return '%s-%s' % (utcnow().strftime('%Y%m%dT%H%M%SZ'), uuid.uuid4().hex[:8])


def _hot_sink(opts, streaming):
  """The hot warehouse's sink, which also writes the cold tier from what
  its commits store (`transforms/sinks/cold_sink.py`)."""
  hot = HotSink(opts.hot_sink)
  if hot.kind == 'bigquery':
    return WriteToBigQueryWarehouse(
        hot.project, hot.dataset, opts.cold_path, opts.bigquery_endpoint,
        max_batch_size=min(opts.batch_size, 5000), streaming=streaming,
        commit_every_s=opts.early_firing_s or 5,
        prebatched=True, mask_fields=parse_fields(opts.mask_fields),
        cold_max_rows=opts.cold_max_rows_per_file, run_id=opts.run_id)
  return WriteToDuckDB(hot.target, opts.cold_path,
                       max_batch_size=opts.batch_size,
                       commit_every_s=opts.early_firing_s or 5,
                       streaming=streaming, prebatched=True,
                       memory_limit=opts.duckdb_memory_limit,
                       cold_max_rows=opts.cold_max_rows_per_file,
                       run_id=opts.run_id)


def _profiles(pipeline, opts):
  if not opts.profiles:
    return None
  return pipeline | 'ReadProfiles' >> ReadProfiles(
      opts.profiles, opts.bigquery_endpoint)


_LOCAL_RUNNERS = (None, 'DirectRunner', 'BundleBasedDirectRunner',
                  'SwitchingDirectRunner')


def _one_local_worker(options) -> bool:
  """The default local run: one in-process worker, nothing to spread over."""
  from apache_beam.options.pipeline_options import DirectOptions
  return (options.view_as(StandardOptions).runner in _LOCAL_RUNNERS + (
      'FnApiRunner',) and options.view_as(DirectOptions).direct_num_workers == 1)


def _held_in(opts):
  """What the local Pub/Sub read asks before acknowledging a message."""
  hot = HotSink(opts.hot_sink)
  if hot.kind == 'bigquery':
    return HeldInBigQuery(hot.project, hot.dataset, opts.bigquery_endpoint)
  return HeldInDuckDB(hot.target)


def _source(pipeline, opts, batch_size=None):
  """The configured input; a locally watched folder gives `Batch`es of at
  most `batch_size` records when one is given, every other source records."""
  if opts.input_subscription and is_local(opts):
    # Beam's local read acknowledges on pull: this one once a commit holds.
    return pipeline | 'ReadInput' >> LocalPubSubRead(
        opts.input_subscription, _held_in(opts), opts.watch_interval_s,
        opts.watch_duration_s or None, registry_path=opts.registry,
        batch_size=batch_size)
  if opts.input_subscription or opts.input_topic:
    return pipeline | 'ReadInput' >> ReadPubSubRecords(
        opts.input_subscription, opts.input_topic, opts.timestamp_attribute)
  if opts.kafka_topic:
    return pipeline | 'ReadInput' >> ReadKafkaRecords(
        kafka_consumer_config(opts.kafka_bootstrap, opts.kafka_group_id,
                              opts.kafka_offset_reset,
                              opts.kafka_max_poll_records),
        [opts.kafka_topic], opts.kafka_commit_on_finalize,
        opts.kafka_expansion_service)
  if opts.input_watch:
    if is_local(opts):
      # MatchContinuously cannot run live on the offline local runners.
      return pipeline | 'WatchInput' >> LocalFileWatch(
          opts.input_watch, opts.watch_interval_s, opts.watch_duration_s or None,
          registry_path=opts.registry, batch_size=batch_size)
    return pipeline | 'WatchInput' >> WatchRecords(
        opts.input_watch, opts.watch_interval_s, opts.watch_duration_s or None,
        registry_path=opts.registry)
  return pipeline | 'ReadInput' >> ReadRecords(opts.input, opts.registry)


def _as_batches(elements, size):
  """Elements (records from an injected or message source, or events) as
  `Batch`es of at most `size`, each stamped with its latest element's
  timestamp (its arrival: streaming dedup keeps a key for the TTL from
  there)."""
  return elements | 'BatchInput' >> batched.BatchByArrival(size)


def _record_batches(pipeline, options, source):
  """The input as `Batch`es of records: bounded files read a batch at a time;
  a watched folder or a subscription read locally batched by its reader;
  any other source (Pub/Sub, Kafka, an injected PCollection) batched as its
  records arrive, within each bundle."""
  opts = options.view_as(AnalyticsOptions)
  size = opts.read_batch_size
  if source is None and opts.input and not options.view_as(
      StandardOptions).streaming:
    return pipeline | 'ReadInput' >> batched.ReadRecordBatches(
        opts.input, size, opts.registry,
        spread_batches=not _one_local_worker(options))
  if source is None:
    source = _source(pipeline, opts, batch_size=size)
  if source.element_type is batched.Batch:
    return source
  return _as_batches(source, size)


def _gate(events, options):
  """The events marked with the views they came too late for, and the
  gate's watermark reports (none on bounded input: nothing is late)."""
  opts = options.view_as(AnalyticsOptions)
  gated = events | 'LateDataGate' >> LateDataGate(
      ViewPolicy(allowed_lateness_s=opts.allowed_lateness),
      shards=state_shards(options),
      streaming=options.view_as(StandardOptions).streaming,
      mask_fields=parse_fields(opts.mask_fields))
  return gated['events'], gated[FLOORS]


def _enrich(pipeline, opts, events, store_factory):
  """Joins profiles; returns (events, dead-letter PCollections, tallies)."""
  if opts.enrichment == 'lookup':
    factory = store_factory or profile_store(opts.profiles,
                                             opts.bigquery_endpoint)
    enriched = events | 'Enrich' >> EnrichWithLookups(
        factory, lookup_settings(opts))
    return (enriched.events, (enriched[ENRICHMENT_FAILED_TAG],),
            (enriched[TALLIES],))
  joined = events | 'Enrich' >> EnrichFromSideInput(_profiles(pipeline, opts))
  return joined.events, (), (joined[TALLIES],)


def _event_rows(opts, events):
  """The staged `events` rows of each batch: its Arrow table for the DuckDB
  sink (its staging file's, and the cold tier's), row dicts with each row's
  record for the BigQuery sink (a row BigQuery refuses becomes a
  `sink_failed` letter with the record's bytes)."""
  if HotSink(opts.hot_sink).kind == 'duckdb':
    return events | 'EventRows' >> beam.Map(
        lambda table: with_processed_at(table, utcnow())).with_output_types(
            pa.Table)
  return events | 'EventRows' >> beam.Map(
      lambda table: batched.Batch(table_rows(table, utcnow()))
  ).with_output_types(batched.Batch)


def _stages(pipeline, options, source, store_factory):
  """Every stage before the sinks: (events, dead-letter PCollections, event
  rows, floors, tallies). Events travel as Arrow tables (`schemas.rows.
  EVENT_BATCH_SCHEMA`) from decoding to the sinks."""
  opts = options.view_as(AnalyticsOptions)
  streaming = options.view_as(StandardOptions).streaming
  batches = _record_batches(pipeline, options, source)
  decoded = batches | 'DecodeAndValidate' >> DecodeTables(
      opts.registry, helper=_one_local_worker(options) and not streaming)
  # Dedup before the views: a retry must not count twice in any view.
  deduped = decoded.events | 'Dedup' >> batched_dedup.DedupBatches(
      opts.dedup_ttl, streaming=streaming, shards=state_shards(options))
  unique = deduped.events | 'JoinBatches' >> batched.Rebatch(
      opts.read_batch_size)
  events, letters, tallies = _enrich(pipeline, opts, unique, store_factory)
  events, floors = _gate(events, options)
  return (events, (decoded[DEAD_LETTER_TAG],) + letters, _event_rows(opts, events),
          floors, (decoded[TALLIES], deduped[TALLIES]) + tallies)


def stages(pipeline, options, *, source=None, store_factory=None):
  """Every stage before the sinks (see `build`); returns (events, dead-letter
  PCollections, event rows, floors, tallies). Split from `sinks` for
  `benchmarks.cluster_cost`, which runs the streaming stages on the Fn API
  runner with a sink that commits once."""
  opts = options.view_as(AnalyticsOptions)
  if not opts.run_id:  # the counts the pipeline writes go under it
    opts.run_id = new_run_id()
  return _stages(pipeline, options, source, store_factory)


def sinks(options, staged, streaming):
  """The dead letters and both tiers, from `stages`' outputs; returns
  `build`'s dict. `streaming`: commit every `--early_firing_s` (else once at
  the end of the input)."""
  opts = options.view_as(AnalyticsOptions)
  events, letters, event_rows, floors, tallies = staged
  collected = letters | 'DeadLetters' >> CollectDeadLetters()
  dead_letters = collected.letters
  letter_rows = (dead_letters
                 | 'DeadLetterRows' >> beam.Map(
                     lambda d, mask: dead_letter_row(d, utcnow(), mask),
                     parse_fields(opts.mask_fields))
                 | 'BatchDeadLetterRows' >> beam.BatchElements(
                     min_batch_size=1, max_batch_size=opts.batch_size))
  rows = {tables.EVENTS.name: event_rows,
          tables.DEAD_LETTERS.name: letter_rows, 'floors': floors,
          # Every step's counts, as data: the commit adds them to
          # pipeline_metrics.
          'tallies': (tallies + (collected[TALLIES],)) | 'Tallies' >> beam.Flatten()}
  written = rows | 'WriteHot' >> _hot_sink(opts, streaming)
  return {'events': events, 'dead_letters': dead_letters,
          'commits': written.commits, 'cold_files': written[COLD_FILES]}


def build(pipeline, options, *, source=None, store_factory=None):
  """Wires the whole pipeline, sinks included; returns its named outputs.

  Args:
    pipeline: the `beam.Pipeline` to add the steps to.
    options: `PipelineOptions` with the `AnalyticsOptions` flags.
    source: a PCollection of raw records (bytes or `RawRecord`), or of
      `Batch`es of them (its `element_type` `transforms.batch.Batch`), to
      use instead of the configured input, for tests and for embedding the
      pipeline.
    store_factory: with `--enrichment lookup`, a picklable callable returning
      the profile store (default: a DuckDB store loaded from `--profiles`).

  Returns:
    A dict of PCollections: `events` (enriched unique events: events
    batches, Arrow tables of `schemas.rows.EVENT_BATCH_SCHEMA`, whatever the
    flags),
    `dead_letters` (every `DeadLetter` but the late ones, which the sink
    writes with their events), `commits` (the hot sink's commits: (table,
    staged rows, written)) and `cold_files` (the paths the cold tier's
    export wrote). The views are maintained by the commits
    (`transforms/views/sql.py`).
  """
  staged = stages(pipeline, options, source=source, store_factory=store_factory)
  return sinks(options, staged, options.view_as(StandardOptions).streaming)
