"""The main job: files in, two tiers and dead letters out.

`build(pipeline, options, source=None)` wires the whole graph (sinks included)
and returns its named outputs; `run(argv)` parses and checks the flags, runs the
graph, writes the run's counters to `pipeline_metrics` and prints a summary.
`python -m pipelines.analytics`, `run_local.sh` and the flex template all call
`run()`.
"""
import datetime
import logging
import os
import sys
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import summary
from pipelines.options import (AnalyticsOptions, HotSink, UsageError,
                               lookup_settings, parse_args)
from schemas import tables
from schemas.rows import dead_letter_row, event_row
from transforms.dead_letters import CollectDeadLetters
from transforms.dedup import DedupByIdempotencyKey
from transforms.decode import DEAD_LETTERS, DecodeAndValidate
from transforms.duckdb_sink import WriteToDuckDB
from transforms.enrich import EnrichFromSideInput, ReadProfiles
from transforms.lookup import ENRICHMENT_FAILED_TAG, EnrichWithLookups
from transforms.sources import ReadRecords, WatchRecords
from transforms.windows import LATE_EVENTS, ViewPolicy, WindowedViews
from transforms.cold_sink import WriteColdParquet
from transforms.stores import DuckDBProfileStore

__all__ = ['build', 'run', 'main']


def _utcnow():
  return datetime.datetime.now(datetime.timezone.utc)


def _enrich(pipeline, opts, events, store_factory):
  """Joins profiles; returns (events, tuple of dead-letter PCollections)."""
  if opts.enrichment == 'lookup':
    factory = store_factory or DuckDBProfileStore(opts.profiles)
    enriched = events | 'Enrich' >> EnrichWithLookups(
        factory, lookup_settings(opts))
    return enriched.events, (enriched[ENRICHMENT_FAILED_TAG],)
  profiles = None
  if opts.profiles:
    profiles = pipeline | 'ReadProfiles' >> ReadProfiles(opts.profiles)
  return events | 'Enrich' >> EnrichFromSideInput(profiles), ()


def _source(pipeline, opts):
  if opts.input_watch:
    return pipeline | 'WatchInput' >> WatchRecords(
        opts.input_watch, opts.watch_interval_s)
  return pipeline | 'ReadInput' >> ReadRecords(opts.input)


def build(pipeline, options, *, source=None, store_factory=None):
  """Wires the whole pipeline, sinks included; returns its named outputs.

  Args:
    pipeline: the `beam.Pipeline` to add the steps to.
    options: `PipelineOptions` with the `AnalyticsOptions` flags.
    source: a PCollection of raw records (bytes or `RawRecord`) to use instead
      of the configured input, for tests and for embedding the pipeline.
    store_factory: with `--enrichment lookup`, a picklable callable returning
      the profile store (default: a DuckDB store loaded from `--profiles`).

  Returns:
    A dict of PCollections: `events` (enriched, unique `Event`s),
    `dead_letters` (every `DeadLetter`, late ones included), one per view table
    (`user_activity_hourly`, `event_counts_1m`, `active_users_15m`: row dicts),
    `commits` (the hot sink's commits) and `cold_files` (paths written).
  """
  opts = options.view_as(AnalyticsOptions)
  streaming = options.view_as(StandardOptions).streaming
  if source is None:
    source = _source(pipeline, opts)
  decoded = source | 'DecodeAndValidate' >> DecodeAndValidate()
  # Dedup before windowing: a retry must not count twice in any view.
  unique = decoded.events | 'Dedup' >> DedupByIdempotencyKey(opts.dedup_ttl)
  events, enrich_letters = _enrich(pipeline, opts, unique, store_factory)
  views = events | 'WindowedViews' >> WindowedViews(ViewPolicy(
      allowed_lateness_s=opts.allowed_lateness,
      early_firing_s=opts.early_firing_s or None,
      beam_lateness_margin_s=max(opts.dedup_ttl, 3600),
      streaming=streaming))
  dead_letters = (
      (decoded[DEAD_LETTERS], views[LATE_EVENTS]) + enrich_letters
      | 'DeadLetters' >> CollectDeadLetters())
  event_rows = events | 'EventRows' >> beam.Map(
      lambda e: event_row(e, _utcnow()))
  rows = {
      tables.EVENTS.name: event_rows,
      tables.DEAD_LETTERS.name: dead_letters | 'DeadLetterRows' >> beam.Map(
          lambda d: dead_letter_row(d, _utcnow())),
  }
  for table in tables.VIEW_TABLES:
    rows[table.name] = views[table.name]
  hot = HotSink(opts.hot_sink)
  commits = rows | 'WriteHot' >> WriteToDuckDB(
      hot.target, max_batch_size=opts.batch_size, streaming=streaming)
  cold_files = event_rows | 'WriteCold' >> WriteColdParquet(
      opts.cold_path, max_rows_per_file=opts.cold_max_rows_per_file,
      streaming=streaming)
  outputs = {'events': events, 'dead_letters': dead_letters,
             'commits': commits, 'cold_files': cold_files}
  for table in tables.VIEW_TABLES:
    outputs[table.name] = views[table.name]
  return outputs


def run(argv=None) -> dict:
  """Runs the job on the command line's flags; returns the summary counters."""
  options = parse_args(sys.argv[1:] if argv is None else argv)
  opts = options.view_as(AnalyticsOptions)
  run_id = '%s-%s' % (_utcnow().strftime('%Y%m%dT%H%M%SZ'), uuid.uuid4().hex[:8])
  hot = HotSink(opts.hot_sink)
  os.makedirs(os.path.dirname(os.path.abspath(hot.target)), exist_ok=True)
  started = time.monotonic()
  pipeline = beam.Pipeline(options=options)
  build(pipeline, options)
  result = pipeline.run()
  result.wait_until_finish()
  seconds = time.monotonic() - started
  counts = summary.read_counters(result)
  summary.write_metrics(hot.target, run_id, counts, _utcnow())
  print(summary.format_summary(run_id, counts, seconds))
  return counts


def main(argv=None):
  logging.getLogger().setLevel(logging.WARNING)
  try:
    run(argv)
  except UsageError as e:
    print('error: %s' % e, file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
