"""The pipeline's graph: `build(pipeline, options, source=...)`.

Shapes of one job, chosen by the input and the runner, never by editing the
graph:

* per record (streaming on Dataflow and Flink, or `--execution per_record`):
  each event is an element;
* batched (bounded input, the default): elements are batches of records and the
  same pure functions run inside them (`batched.py`), ~20x faster locally;
  with the DuckDB sink and side-input enrichment each batch of events is an
  `events` Arrow table from decoding on, decoded in a helper process too when
  there is one local worker (`batched_tables.py`, `parallel_decode.py`);
* micro-batched (streaming on the local runner, the default there): batches
  of records as they arrive, dedup keys expiring by event time
  (`batched_dedup.py`). Per record, the local runner grows per record: it
  keeps every key a stateful step ever saw (and walks them all to find
  timers).

In streaming, the late-data gate (`windows.py`) marks each event with the
views it came too late for. The views themselves are maintained by the hot
sink's commit from the events it newly stores (`view_sql.py`), and the cold
tier is written from what the commit stored (`cold_sink.py`), so both stay
exact whatever the history of runs. The shapes produce the same rows and
counters; tests check it.
"""
import datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import StandardOptions

from pipelines.options import AnalyticsOptions, HotSink, lookup_settings
from schemas import tables
from schemas.rows import dead_letter_row, event_row, events_table
from transforms import batched, batched_dedup
from transforms.batched_tables import with_processed_at
from transforms.cold_sink import COLD_FILES
from transforms.dead_letters import CollectDeadLetters
from transforms.decode import DEAD_LETTERS, DecodeAndValidate
from transforms.dedup import DedupByIdempotencyKey
from transforms.bigquery_sink import WriteToBigQueryWarehouse
from transforms.duckdb_sink import WriteToDuckDB
from transforms.enrich import EnrichFromSideInput, ReadProfiles
from transforms.lookup import ENRICHMENT_FAILED_TAG, EnrichWithLookups
from transforms.local_pubsub import HeldInBigQuery, HeldInDuckDB, LocalPubSubRead
from transforms.local_watch import LocalFileWatch
from schemas.masking import parse_fields
from transforms.parallel_decode import DecodeTables
from transforms.message_sources import (ReadKafkaRecords, ReadPubSubRecords,
                                        kafka_consumer_config)
from transforms.sources import ReadRecords, WatchRecords
from transforms.stores import profile_store
from transforms.tallies import TALLIES
from transforms.windows import FLOORS, LateDataGate, ViewPolicy

__all__ = ['build', 'utcnow', 'is_batched', 'is_micro_batched', 'is_local',
           'runs_here', 'new_run_id']


def utcnow():
  return datetime.datetime.now(datetime.timezone.utc)


def is_batched(options) -> bool:
  """The fast path: bounded input and not asked for per-record execution."""
  opts = options.view_as(AnalyticsOptions)
  return (not options.view_as(StandardOptions).streaming
          and opts.execution == 'batched')


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


def is_micro_batched(options) -> bool:
  """Streaming on the local runner, not asked for per-record execution."""
  opts = options.view_as(AnalyticsOptions)
  return (options.view_as(StandardOptions).streaming
          and opts.execution == 'batched' and is_local(options))


def _event_row(event, mask):
  return event_row(event, utcnow(), mask)


def _event_row_with_source(event, mask):
  """For the BigQuery sink: the row and the record it came from, so that a row
  BigQuery rejects becomes a `sink_failed` letter with the original bytes."""
  row = event_row(event, utcnow(), mask)
  row['_raw'], row['_origin'] = event.raw, event.origin
  return row


def _row_maker(opts):
  if HotSink(opts.hot_sink).kind == 'bigquery':
    return _event_row_with_source
  return _event_row


def new_run_id() -> str:
  """A run's id: its start time (sortable) and a random suffix."""
  import uuid
  return '%s-%s' % (utcnow().strftime('%Y%m%dT%H%M%SZ'), uuid.uuid4().hex[:8])


def _hot_sink(opts, streaming, fast):
  """The hot warehouse's sink, which also writes the cold tier from what
  its commits store (`cold_sink.py`)."""
  hot = HotSink(opts.hot_sink)
  if hot.kind == 'bigquery':
    return WriteToBigQueryWarehouse(
        hot.project, hot.dataset, opts.cold_path, opts.bigquery_endpoint,
        max_batch_size=min(opts.batch_size, 5000), streaming=streaming,
        commit_every_s=opts.early_firing_s or 5,
        prebatched=fast, mask_fields=parse_fields(opts.mask_fields),
        cold_max_rows=opts.cold_max_rows_per_file, run_id=opts.run_id)
  return WriteToDuckDB(hot.target, opts.cold_path,
                       max_batch_size=opts.batch_size,
                       commit_every_s=opts.early_firing_s or 5,
                       streaming=streaming, prebatched=fast,
                       memory_limit=opts.duckdb_memory_limit,
                       cold_max_rows=opts.cold_max_rows_per_file,
                       run_id=opts.run_id)


def _enrich(pipeline, opts, events, store_factory):
  """Joins profiles; returns (events, tuple of dead-letter PCollections,
  tuple of tallies PCollections)."""
  if opts.enrichment == 'lookup':
    factory = store_factory or profile_store(opts.profiles,
                                             opts.bigquery_endpoint)
    enriched = events | 'Enrich' >> EnrichWithLookups(
        factory, lookup_settings(opts))
    return (enriched.events, (enriched[ENRICHMENT_FAILED_TAG],),
            (enriched[TALLIES],))
  joined = events | 'Enrich' >> EnrichFromSideInput(_profiles(pipeline, opts))
  return joined.events, (), (joined[TALLIES],)


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


def _gate(events, opts, streaming):
  """Streaming: the events marked with the views they came too late for,
  and the gate's watermark reports; bounded input: nothing is late."""
  if not streaming:
    return events, ()
  gated = events | 'LateDataGate' >> LateDataGate(
      ViewPolicy(allowed_lateness_s=opts.allowed_lateness))
  return gated.events, (gated[FLOORS],)


def _per_record(pipeline, options, source, store_factory):
  opts = options.view_as(AnalyticsOptions)
  streaming = options.view_as(StandardOptions).streaming
  if source is None:
    source = _source(pipeline, opts)
  decoded = source | 'DecodeAndValidate' >> DecodeAndValidate(opts.registry)
  # Dedup before the views: a retry must not count twice in any view.
  unique = decoded.events | 'Dedup' >> DedupByIdempotencyKey(opts.dedup_ttl)
  events, enrich_letters, enrich_tallies = _enrich(
      pipeline, opts, unique.events, store_factory)
  events, floors = _gate(events, opts, streaming)
  letters = (decoded[DEAD_LETTERS],) + enrich_letters
  event_rows = events | 'EventRows' >> beam.Map(
      _row_maker(opts), parse_fields(opts.mask_fields))
  tallies = (decoded[TALLIES], unique[TALLIES]) + enrich_tallies
  return events, letters, event_rows, floors, tallies


def _as_batches(elements, size, labels=('BatchInput', 'AsBatch')):
  """Elements (records from an injected or message source, or events) as
  `Batch`es of at most `size`, each stamped with its latest element's
  timestamp (its arrival: streaming dedup keeps a key for the TTL from
  there)."""
  gather, _ = labels
  return elements | gather >> batched.BatchByArrival(size)


def _batched_events(pipeline, opts, decoded, store_factory, streaming):
  """Decoded `Batch`es of events to enriched unique ones; returns (events,
  tuple of the steps' dead-letter PCollections, tuple of their tallies)."""
  deduped = decoded.events | 'Dedup' >> batched_dedup.DedupBatches(
      opts.dedup_ttl, streaming=streaming)
  unique = deduped.events | 'JoinBatches' >> batched.Rebatch(
      opts.read_batch_size)
  letters = (decoded[DEAD_LETTERS],)
  tallies = (decoded[TALLIES], deduped[TALLIES])
  if opts.enrichment == 'lookup':
    # Beam's Enrichment takes one element per request: unbatch around it.
    single = unique | 'Unbatch' >> beam.FlatMap(lambda b: b)
    enriched, more, counted = _enrich(pipeline, opts, single, store_factory)
    events = _as_batches(enriched, opts.read_batch_size,
                         ('Rebatch', 'AsEventBatch'))
    return events, letters + more, tallies + counted
  joined = unique | 'Enrich' >> EnrichFromSideInput(
      _profiles(pipeline, opts), batched=True)
  return joined.events, letters, tallies + (joined[TALLIES],)


def _batched_event_rows(opts, events):
  """The `events` rows of each batch: one Arrow table for the DuckDB sink
  (shared by its staging file and the cold tier's), else row dicts."""
  mask = parse_fields(opts.mask_fields)
  if HotSink(opts.hot_sink).kind == 'duckdb':
    return events | 'EventRows' >> beam.Map(
        lambda b: events_table(b, utcnow(), mask)).with_output_types(pa.Table)
  return events | 'EventRows' >> beam.Map(
      lambda b, to_row: batched.Batch([to_row(e, mask) for e in b]),
      _row_maker(opts)).with_output_types(batched.Batch)


def _batched(pipeline, options, source, store_factory):
  opts = options.view_as(AnalyticsOptions)
  if source is None:
    batches = pipeline | 'ReadInput' >> batched.ReadRecordBatches(
        opts.input, opts.read_batch_size, opts.registry,
        spread_batches=not _one_local_worker(options))
  else:
    batches = _as_batches(source, opts.read_batch_size)
  to_duckdb = HotSink(opts.hot_sink).kind == 'duckdb'
  if to_duckdb and opts.enrichment != 'lookup':
    # Every step after decoding needs the events only as rows of their
    # table: decoded straight to it, beside the runner with one local worker.
    return _batched_tables(pipeline, options, batches)
  decoded = batches | 'DecodeAndValidate' >> batched.DecodeBatches(
      opts.registry)
  events, letters, tallies = _batched_events(pipeline, opts, decoded,
                                             store_factory, streaming=False)
  return events, letters, _batched_event_rows(opts, events), (), tallies


def _micro_batched(pipeline, options, source, store_factory):
  """Streaming on the local runner: batches of records as they arrive."""
  opts = options.view_as(AnalyticsOptions)
  if source is None:
    source = _source(pipeline, opts, batch_size=opts.read_batch_size)
  batches = source if source.element_type is batched.Batch else _as_batches(
      source, opts.read_batch_size)
  decoded = batches | 'DecodeAndValidate' >> batched.DecodeBatches(
      opts.registry)
  events, letters, tallies = _batched_events(pipeline, opts, decoded,
                                             store_factory, streaming=True)
  events, floors = _gate(events, opts, streaming=True)
  return events, letters, _batched_event_rows(opts, events), floors, tallies


def _batched_tables(pipeline, options, batches):
  """The batched path with the DuckDB sink and side-input enrichment: each
  batch of events is one `events` Arrow table from decoding on."""
  opts = options.view_as(AnalyticsOptions)
  decoded = batches | 'DecodeAndValidate' >> DecodeTables(
      opts.registry, helper=_one_local_worker(options))
  deduped = decoded.events | 'Dedup' >> batched_dedup.DedupBatches(
      opts.dedup_ttl, pa.Table)
  joined = (deduped.events
            | 'JoinBatches' >> batched.Rebatch(opts.read_batch_size, pa.Table)
            | 'Enrich' >> EnrichFromSideInput(
                _profiles(pipeline, opts), batched=True, element_type=pa.Table))
  events = joined.events
  event_rows = events | 'EventRows' >> beam.Map(
      lambda table: with_processed_at(table, utcnow())).with_output_types(
          pa.Table)
  tallies = (decoded[TALLIES], deduped[TALLIES], joined[TALLIES])
  return events, (decoded[DEAD_LETTERS],), event_rows, (), tallies


def build(pipeline, options, *, source=None, store_factory=None):
  """Wires the whole pipeline, sinks included; returns its named outputs.

  Args:
    pipeline: the `beam.Pipeline` to add the steps to.
    options: `PipelineOptions` with the `AnalyticsOptions` flags.
    source: a PCollection of raw records (bytes or `RawRecord`) to use instead
      of the configured input, for tests and for embedding the pipeline;
      micro-batched (streaming on the local runner), also of `Batch`es of
      them when its `element_type` is `Batch`.
    store_factory: with `--enrichment lookup`, a picklable callable returning
      the profile store (default: a DuckDB store loaded from `--profiles`).

  Returns:
    A dict of PCollections: `events` (enriched unique `Event`s; on the
    batched and micro-batched paths `Batch`es of them, or on the batched
    path `events` Arrow tables without `processed_at` with the DuckDB sink
    and side-input enrichment), `dead_letters` (every `DeadLetter` but the
    late ones, which the sink writes with their events), `commits` (the
    hot sink's commits: (table, staged rows, written)) and `cold_files` (the
    paths the cold tier's export wrote). The views are maintained by the
    commits (`transforms/view_sql.py`).
  """
  opts = options.view_as(AnalyticsOptions)
  if not opts.run_id:  # the counts the pipeline writes go under it
    opts.run_id = new_run_id()
  streaming = options.view_as(StandardOptions).streaming
  fast = is_batched(options) or is_micro_batched(options)
  build_path = (_batched if is_batched(options) else
                _micro_batched if fast else _per_record)
  events, letters, event_rows, floors, tallies = build_path(
      pipeline, options, source, store_factory)
  collected = letters | 'DeadLetters' >> CollectDeadLetters()
  dead_letters = collected.letters
  letter_rows = dead_letters | 'DeadLetterRows' >> beam.Map(
      lambda d, mask: dead_letter_row(d, utcnow(), mask),
      parse_fields(opts.mask_fields))
  if fast:
    letter_rows = letter_rows | 'BatchDeadLetterRows' >> beam.BatchElements(
        min_batch_size=1, max_batch_size=opts.batch_size)
  rows = {tables.EVENTS.name: event_rows,
          tables.DEAD_LETTERS.name: letter_rows}
  if floors:
    rows['floors'] = floors[0]
  # Every step's counts, as data: the commit adds them to pipeline_metrics.
  rows['tallies'] = (tallies + (collected[TALLIES],)) | 'Tallies' >> beam.Flatten()
  written = rows | 'WriteHot' >> _hot_sink(opts, streaming, fast)
  return {'events': events, 'dead_letters': dead_letters,
          'commits': written.commits, 'cold_files': written[COLD_FILES]}
