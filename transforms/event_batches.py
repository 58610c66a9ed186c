"""Events batches by their columns: shard split, dedup, profiles, row time.

Events travel between the stages as events batches, one Arrow table each
(`schemas.rows.EVENT_BATCH_SCHEMA`), made by decoding
(`ingest/decoding.decode_table`). Dedup, enrichment and the row time work
on their columns here (`table_shards`, `first_copies`, `enrich_table`,
`with_processed_at`); the tests compare each with the same step over
`Event`s in plain Python.
"""
import datetime

import pyarrow as pa
import pyarrow.compute as pc

from schemas import tables
from schemas.keys import key_shard
from schemas.rows import staged_columns
from transforms.enrich.profiles import FALLBACK

__all__ = ['split_table', 'table_shards', 'first_copies', 'enrich_table',
           'with_processed_at']

_SCHEMA = tables.arrow_schema(tables.STAGED_EVENTS)
_COLUMN = {name: i for i, name in enumerate(_SCHEMA.names)}


def split_table(table: pa.Table, keys):
  """[(key, rows of `table` with that key)] for `keys` (one per row), keys in
  order of first appearance, rows in order. One take puts each key's rows
  together and the parts are slices of it (a take per key copied the whole
  table's columns once per key)."""
  rows = {}
  for i, key in enumerate(keys):
    rows.setdefault(key, []).append(i)
  if len(rows) == 1:
    return [(key, table) for key in rows]
  grouped = table.take([i for indices in rows.values() for i in indices])
  parts, start = [], 0
  for key, indices in rows.items():
    parts.append((key, grouped.slice(start, len(indices))))
    start += len(indices)
  return parts


def table_shards(table: pa.Table, shards: int):
  """[(shard, rows of `table` whose key falls in it)], rows in order."""
  return split_table(table, [key_shard(key, shards) for key in
                             table.column('idempotency_key').to_pylist()])


def first_copies(table: pa.Table, known: set, compact):
  """The rows of `table` whose key (as `compact(key)`) is not in `known`,
  first copy of each; adds their keys to `known`.

  Returns (rows kept, duplicates dropped, latest event time kept in
  microseconds or None)."""
  keep = []
  for key in table.column('idempotency_key').to_pylist():
    key = compact(key)
    if key in known:
      keep.append(False)
    else:
      known.add(key)
      keep.append(True)
  kept = table if all(keep) else table.filter(pa.array(keep, pa.bool_()))
  duplicates = len(keep) - kept.num_rows
  if not kept.num_rows:
    return kept, duplicates, None
  return kept, duplicates, pc.max(kept.column('event_time')).value


def enrich_table(table: pa.Table, profiles):
  """`table` with each row's tier and region from `profiles` (a mapping of
  (tenant_id, user_id) to Profile; the fallback when missing), and how many
  rows fell back: `enrich.apply_profile` by columns."""
  found = [profiles.get(key) for key in zip(
      table.column('tenant_id').to_pylist(), table.column('user_id').to_pylist())]
  chosen = [p or FALLBACK for p in found]
  for name, values in (('user_tier', [p.tier for p in chosen]),
                       ('user_region', [p.region for p in chosen])):
    table = table.set_column(_COLUMN[name], _SCHEMA.field(name),
                             pa.array(values, pa.string()))
  return table, found.count(None)


def with_processed_at(table: pa.Table, processed_at: datetime.datetime):
  """The staged rows of an events batch, stamped with the time they are
  made into warehouse rows."""
  field = _SCHEMA.field('processed_at')
  return staged_columns(table).set_column(
      _COLUMN['processed_at'], field, pa.array(
          [processed_at] * table.num_rows, field.type))
