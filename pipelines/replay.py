"""The dead-letter replay job: repaired letters back through the same path.

    python -m pipelines.replay --hot_sink duckdb:out/warehouse.duckdb \\
        --cold_path out/cold [--profiles ...] [--kind K] [--tenant T] \\
        [--since RFC3339] [--until RFC3339] [--repair NAME ...] [--registry ...]

Reads the letters not yet replayed from the hot warehouse (filters on kind,
tenant and `failed_at`; `late_event` letters are never replayed, their events
are stored), applies the registered repairs (`transforms/sinks/repairs.py`), and sends
the bytes through the same graph as the main job (`pipelines.graph.build` with
the letters as its source): decode, validate with the current registry (its
gates and upcasters), dedup, enrichment, both tiers.

* A record that lands (a new row, or a key already stored) has its letter marked
  `replayed_at`, not deleted.
* A record that fails again stays one letter: its origin `replay:<id>` makes the
  sink update that letter (new reason, `replay_count` + 1), never add another.
* Replaying twice adds nothing: landed letters are not selected again and events
  are written once per key.

Prints replayed, repaired, landed and still failing, and writes them to
`pipeline_metrics` as `replay_*` counters (not as `input_records`: these records
were counted when they were first read).
"""
import logging
import sys
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import summary
from pipelines.graph import build, utcnow
from pipelines.checks import run_command
from pipelines.options import AnalyticsOptions, HotSink, UsageError, parse_args
from schemas.records import ERROR_KINDS, Event, LATE_EVENT, RawRecord
from schemas.registry import load_registry
from schemas.rows import REPLAY_ORIGIN, raw_bytes
from transforms import counters
from transforms.ingest.decode import decode_and_validate
from transforms.sinks.duckdb_connection import connect
from transforms.sinks.repairs import REPAIRS, apply_repairs
from transforms.ingest.timestamps import parse_rfc3339

__all__ = ['ReplayOptions', 'select_letters', 'run', 'main']


class ReplayOptions(PipelineOptions):
  """The replay job's own flags (the main job's flags apply as well)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--kind', default=None,
                        help='Replay only letters of this error_kind.')
    parser.add_argument('--tenant', default=None,
                        help='Replay only letters of this tenant_id.')
    parser.add_argument('--since', default=None,
                        help='Replay letters that failed at or after (RFC 3339).')
    parser.add_argument('--until', default=None,
                        help='Replay letters that failed before (RFC 3339).')
    parser.add_argument('--repair', action='append', default=None,
                        help='A registered repair to apply (repeatable); '
                        'default: all of them; --repair none for none.')


def _check(opts):
  if opts.kind is not None and (opts.kind not in ERROR_KINDS
                                or opts.kind == LATE_EVENT):
    raise UsageError('--kind: expected one of %s, got %r' % (
        ', '.join(k for k in ERROR_KINDS if k != LATE_EVENT), opts.kind))
  bounds = {}
  for flag in ('since', 'until'):
    value = getattr(opts, flag)
    if value is not None:
      parsed = parse_rfc3339(value)
      if parsed is None:
        raise UsageError('--%s: not an RFC 3339 timestamp with a zone: %r'
                         % (flag, value))
      bounds[flag] = parsed.replace(tzinfo=None)
  names = opts.repair if opts.repair is not None else sorted(REPAIRS)
  if names == ['none']:
    names = []
  for name in names:
    if name not in REPAIRS:
      raise UsageError('--repair: no repair named %r (registered: %s)' % (
          name, ', '.join(sorted(REPAIRS))))
  if HotSink(opts.view_as(AnalyticsOptions).hot_sink).kind != 'duckdb':
    raise UsageError('--hot_sink: the replay job reads duckdb:PATH warehouses')
  return bounds, names


def select_letters(db_path, kind=None, tenant=None, since=None, until=None):
  """(dead_letter_id, error_kind, raw bytes) of the letters to replay."""
  # Masked letters (--mask_fields) no longer hold the record as it was sent.
  sql = ['SELECT dead_letter_id, error_kind, raw, raw_encoding FROM dead_letters '
         "WHERE replayed_at IS NULL AND error_kind <> ? AND raw_encoding IN "
         "('utf-8', 'base64')"]
  params = [LATE_EVENT]
  for column, op, value in (('error_kind', '=', kind), ('tenant_id', '=', tenant),
                            ('failed_at', '>=', since), ('failed_at', '<', until)):
    if value is not None:
      sql.append('AND %s %s ?' % (column, op))
      params.append(value)
  con = connect(db_path)
  try:
    rows = con.execute(' '.join(sql) + ' ORDER BY dead_letter_id', params).fetchall()
  finally:
    con.close()
  return [(i, k, raw_bytes(text, encoding)) for i, k, text, encoding in rows]


def _stored_keys(db_path, keys):
  """The keys among `keys` already in `events`."""
  if not keys:
    return set()
  con = connect(db_path)
  try:
    con.execute('CREATE TEMP TABLE wanted (k VARCHAR)')
    con.executemany('INSERT INTO wanted VALUES (?)', [(k,) for k in keys])
    return {row[0] for row in con.execute(
        'SELECT idempotency_key FROM events JOIN wanted ON idempotency_key = k'
    ).fetchall()}
  finally:
    con.close()


def _outcome(db_path, ids, started):
  """Marks the letters that landed; returns the ids still failing."""
  con = connect(db_path)
  try:
    con.execute('CREATE TEMP TABLE replayed (dead_letter_id VARCHAR)')
    con.executemany('INSERT INTO replayed VALUES (?)', [(i,) for i in ids])
    failing = {row[0] for row in con.execute(
        'SELECT d.dead_letter_id FROM dead_letters d JOIN replayed USING '
        '(dead_letter_id) WHERE d.failed_at >= ?', [started]).fetchall()}
    con.execute(
        'UPDATE dead_letters SET replayed_at = ?, '
        'replay_count = replay_count + 1 WHERE dead_letter_id IN '
        '(SELECT dead_letter_id FROM replayed) AND failed_at < ?',
        [utcnow().replace(tzinfo=None), started])
  finally:
    con.close()
  return failing


def _take_pipeline_counts(db_path, run_id):
  """The counts the replay's pipeline wrote under `run_id`, removed from
  `pipeline_metrics` (the replay's `replay_*` counters say what happened)."""
  counts = summary.stored_counters(db_path, run_id)
  con = connect(db_path)
  try:
    con.execute('DELETE FROM pipeline_metrics WHERE run_id = ?', [run_id])
  finally:
    con.close()
  return counts


def run(argv=None) -> dict:
  """Replays the selected letters; returns the replay counters."""
  options = parse_args(sys.argv[1:] if argv is None else argv, needs_input=False)
  opts = options.view_as(AnalyticsOptions)
  bounds, repairs = _check(options.view_as(ReplayOptions))
  replay = options.view_as(ReplayOptions)
  db_path = HotSink(opts.hot_sink).target
  begun = time.monotonic()
  run_id = 'replay-%s-%s' % (utcnow().strftime('%Y%m%dT%H%M%SZ'),
                             uuid.uuid4().hex[:8])
  try:
    return _replay(options, opts, replay, bounds, repairs, db_path, run_id,
                   begun)
  except Exception as failure:
    summary.record_failure(db_path, run_id, time.monotonic() - begun, failure)
    raise


def _replay(options, opts, replay, bounds, repairs, db_path, run_id, begun):
  letters = select_letters(db_path, replay.kind, replay.tenant,
                           bounds.get('since'), bounds.get('until'))
  records, repaired, keys = [], 0, {}
  registry = load_registry(opts.registry)
  for letter_id, kind, raw in letters:
    fixed, applied = apply_repairs(kind, raw, repairs)
    repaired += bool(applied)
    record = RawRecord(fixed, REPLAY_ORIGIN + letter_id)
    records.append(record)
    event, _ = decode_and_validate(record, registry)
    if isinstance(event, Event):
      keys[record] = event.idempotency_key
  # A letter whose event is stored already (a retry that once failed) is a
  # duplicate: it is marked replayed without being written to either tier
  # again (the cold tier, unlike the hot one, cannot refuse a second copy).
  stored = _stored_keys(db_path, set(keys.values()))
  to_send = [r for r in records if keys.get(r) not in stored]
  result = {'replay_selected': len(records), 'replay_repaired': repaired,
            'replay_landed': len(records) - len(to_send),
            'replay_still_failing': 0, 'replay_events_written': 0,
            'replay_duplicates': len(records) - len(to_send)}
  if records:
    started = utcnow().replace(tzinfo=None)
    clock = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    if to_send:
      # The pipeline records its counts under the replay's id; they become
      # the replay's own `replay_*` counters (the records were counted as
      # input when they were first read).
      opts.run_id = run_id
      build(pipeline, options, source=pipeline | 'ReplayLetters' >> beam.Create(
          to_send, reshuffle=False))
      pipeline.run().wait_until_finish()
      counts = _take_pipeline_counts(db_path, run_id)
      result['replay_events_written'] = counts[counters.EVENTS_WRITTEN]
      result['replay_duplicates'] += (counts[counters.DUPLICATES]
                                      + counts[counters.EVENTS_ALREADY_STORED])
    failing = _outcome(db_path, [i for i, _, _ in letters], started)
    result.update(replay_landed=len(records) - len(failing),
                  replay_still_failing=len(failing))
    logging.info('replay took %.1f s', time.monotonic() - clock)
  summary.write_metrics(db_path, run_id, dict(result, **summary.run_outcome(
      True, time.monotonic() - begun)), utcnow())
  print('replay %s: replayed %d (repaired %d): landed %d (events written %d, '
        'duplicates or already stored %d), still failing %d' % (
            run_id, result['replay_selected'], result['replay_repaired'],
            result['replay_landed'], result['replay_events_written'],
            result['replay_duplicates'], result['replay_still_failing']))
  return result


def main(argv=None):
  run_command(run, argv)


if __name__ == '__main__':
  main()
