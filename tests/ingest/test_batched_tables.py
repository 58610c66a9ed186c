"""The batched path's events as Arrow tables give what its `Event` lists give.

Dedup, shard split, enrichment and the row time by columns
(`transforms/event_batches.py`) are compared with the same steps over `Event`s; the
decode step with its helper process (`transforms/ingest/parallel_decode.py`) with decoding
here, on a corpus with every kind of bad record, in input order. The bounded
graph against the streaming one: `test_cli.test_bounded_and_streaming_graphs_agree`.
"""
import datetime
import glob
import os
import signal
import time

import pytest
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.generate import generate
from schemas import rows
from schemas.registry import load_registry
from tests.helpers import sample_events
from schemas.keys import key_shard
from transforms.dedup import shards as batched_dedup
from transforms import event_batches as batched_tables
from transforms.ingest import parallel_decode
from transforms.views.specs import micros
from transforms.ingest.decode import DEAD_LETTER_TAG
from transforms.tallies import TALLIES
from transforms.ingest.decoding import NOT_PROCESSED, decode_records
from transforms.enrich.side_input import apply_profile
from transforms.enrich.profiles import Profile
from transforms.ingest.sources import read_file_records

NOW = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)


def _events_with_retries():
  events = sample_events(40)
  # Retries: the same keys again, with other trace ids, some in one batch.
  return events + [e._replace(trace_id='retry-%d' % i)
                   for i, e in enumerate(events[::3])] + events[:2]


def _first_events(events, known):
  """Dedup over `Event`s in plain Python: the reference."""
  unique = []
  for event in events:
    key = batched_dedup.compact_key(event.idempotency_key)
    if key not in known:
      known.add(key)
      unique.append(event)
  return unique


def test_dedup_by_columns_equals_dedup_of_events():
  events = _events_with_retries()
  for known_before in (set(), {batched_dedup.compact_key(events[5].idempotency_key)}):
    unique = _first_events(events, set(known_before))
    table = rows.events_table(events, NOW, with_source=True)
    known = set(known_before)
    kept, duplicates, latest = batched_tables.first_copies(
        table, known, batched_dedup.compact_key)
    assert kept.equals(rows.events_table(unique, NOW, with_source=True))
    assert duplicates == len(events) - len(unique)
    assert latest == max(micros(e.event_time) for e in unique)
    assert duplicates == len(events) - 40 + len(known_before)
  empty = batched_tables.first_copies(table, known, batched_dedup.compact_key)
  assert (empty[0].num_rows, empty[1], empty[2]) == (0, len(events), None)


def test_shards_by_columns_equal_the_shards_of_events():
  events = _events_with_retries()
  parts = {}
  for event in events:
    parts.setdefault(key_shard(event.idempotency_key, 16), []).append(event)
  by_columns = dict(batched_tables.table_shards(
      rows.events_table(events, NOW), 16))
  assert by_columns.keys() == parts.keys() and len(by_columns) > 5
  for shard, table in by_columns.items():
    assert table.equals(rows.events_table(parts[shard], NOW))


def test_enrichment_and_row_time_by_columns_equal_those_of_events():
  events = sample_events(30)
  profiles = {(e.tenant_id, e.user_id): Profile('t%d' % i, 'r%d' % i, 'x')
              for i, e in enumerate(events) if i % 4}
  expected = [apply_profile(e, profiles.get((e.tenant_id, e.user_id)))
              for e in events]
  table, fallbacks = batched_tables.enrich_table(
      rows.events_table(events, NOT_PROCESSED), profiles)
  assert fallbacks == sum(1 for i in range(30) if not i % 4) > 0
  assert batched_tables.with_processed_at(table, NOW).equals(
      rows.events_table(expected, NOW))


@pytest.fixture(scope='module')
def raw_batches(tmp_path_factory):
  """A generated corpus (blank lines, bad records of every kind) in batches."""
  out = str(tmp_path_factory.mktemp('corpus'))
  generate(out, events=1200, users=30, tenants=3, files=1, seed=3,
           bad_rate=0.08, blank_rate=0.02)
  [path] = glob.glob(out + '/events/*.jsonl')
  with open(path, 'rb') as f:
    records = list(read_file_records(f, path))
  return [records[i:i + 100] for i in range(0, len(records), 100)]


def _run_fn(fn, batches):
  """Runs the DoFn over the batches as one bundle; returns its outputs in
  order: ('events', table) and ('letter', DeadLetter)."""
  fn.setup()
  fn.start_bundle()
  out = []
  for batch in batches:
    out.extend(fn.process(batch, timestamp=0, window=None))
  out.extend(fn.finish_bundle())
  fn.teardown()
  flat = []
  for item in out:
    if getattr(item, 'tag', None) == TALLIES:  # the bundle's counts
      continue
    if hasattr(item, 'tag'):
      assert item.tag == DEAD_LETTER_TAG
      flat.append(('letter', item.value.value))
    else:
      assert isinstance(item, WindowedValue)
      flat.append(('events', item.value))
  return flat


def _expected(batches):
  registry = load_registry()
  expected = []
  for batch in batches:
    decoded = decode_records(batch, registry)
    expected.extend(('letter', letter) for letter in decoded.letters)
    if decoded.events:
      expected.append(('events', rows.events_table(
          decoded.events, NOT_PROCESSED, with_source=True)))
  return expected


@pytest.mark.parametrize('helper', [False, True])
def test_decoding_to_tables_equals_decoding_here_in_input_order(
    raw_batches, helper):
  fn = parallel_decode._DecodeTablesFn(helper=helper)
  got = _run_fn(fn, raw_batches)
  expected = _expected(raw_batches)
  assert [kind for kind, _ in got] == [kind for kind, _ in expected]
  assert {kind for kind, _ in got} == {'events', 'letter'}
  for (kind, value), (_, wanted) in zip(got, expected):
    assert value.equals(wanted) if kind == 'events' else value == wanted
  # With the helper it decodes some batches, never the first; without, none.
  assert (0 < fn.helper_batches < len(raw_batches)) if helper else (
      fn.helper_batches == 0)


def test_a_single_batch_never_starts_the_helper(raw_batches):
  fn = parallel_decode._DecodeTablesFn(helper=True)
  fn.setup()
  for batch in raw_batches[:2]:  # two bundles of one batch each
    fn.start_bundle()
    list(fn.process(batch, timestamp=0, window=None))
    list(fn.finish_bundle())
  assert fn._pool is None and fn.helper_batches == 0
  fn.teardown()


def test_a_batch_the_helper_fails_on_fails_the_bundle(raw_batches):
  fn = parallel_decode._DecodeTablesFn(helper=True)
  fn.setup()
  fn.start_bundle()
  list(fn.process(raw_batches[0], timestamp=0, window=None))
  with pytest.raises(TypeError, match='a raw record must be bytes'):
    list(fn.process([b'{}', 42], timestamp=0, window=None))
    list(fn.finish_bundle())
  fn.teardown()
  assert fn._pool is None


def test_batches_a_killed_helper_held_are_decoded_here(raw_batches):
  fn = parallel_decode._DecodeTablesFn(helper=True)
  fn.setup()
  fn.start_bundle()
  got, killed = [], []
  for i, batch in enumerate(raw_batches):
    got.extend(fn.process(batch, timestamp=0, window=None))
    if i in (3, 7):  # the helper then holds batches (futures not done)
      [helper] = fn._pool._processes
      assert helper not in killed  # a new helper replaced the killed one
      os.kill(helper, signal.SIGKILL)
      killed.append(helper)
      if i == 3:  # let the pool see it died: the next batch's submit fails
        time.sleep(1)
  got.extend(fn.finish_bundle())
  fn.teardown()
  assert len(killed) == 2
  flat = [('letter', g.value.value) if hasattr(g, 'tag') else ('events', g.value)
          for g in got if getattr(g, 'tag', None) != TALLIES]
  expected = _expected(raw_batches)
  assert [kind for kind, _ in flat] == [kind for kind, _ in expected]
  for (kind, value), (_, wanted) in zip(flat, expected):
    assert value.equals(wanted) if kind == 'events' else value == wanted
