"""The same job in plain single-threaded Python, for the throughput benchmark's
side-by-side ratio. It uses the project's pure functions (decode, validate,
profiles, views, rows) and writes the same tables to its own DuckDB file and
Parquet folder, so its cost is the job's, without Beam."""
import glob
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import tables
from schemas.records import DeadLetter
from schemas.rows import dead_letter_row, event_row
from transforms.sinks.cold_sink import partition_of
from transforms.ingest.decode import decode_and_validate
from transforms.sinks.duckdb_connection import connect
from transforms.enrich.side_input import apply_profile
from transforms.enrich.profiles import newest_profiles
from transforms.ingest.sources import read_file_records
from transforms.views.specs import VIEWS, add_event, micros, new_accumulator, view_row, \
    window_starts

__all__ = ['run_plain']


def run_plain(pattern, profiles_path, db_path, cold_path, now):
  """Runs the job; returns ({stage: seconds}, {counter: value})."""
  times, counts = {}, {'input_records': 0, 'blank_lines': 0, 'duplicates': 0}
  start = time.perf_counter()
  events, letters, seen = [], [], set()
  for path in sorted(glob.glob(pattern)):
    with open(path, 'rb') as f:
      for record in read_file_records(f, path):
        result, _ = decode_and_validate(record)
        if result is None:
          counts['blank_lines'] += 1
          continue
        counts['input_records'] += 1
        if isinstance(result, DeadLetter):
          letters.append(result)
        elif result.idempotency_key in seen:
          counts['duplicates'] += 1
        else:
          seen.add(result.idempotency_key)
          events.append(result)
  times['read+decode+dedup'] = time.perf_counter() - start
  start = time.perf_counter()
  with open(profiles_path, encoding='utf-8') as f:
    profiles = newest_profiles(f)
  events = [apply_profile(e, profiles.get((e.tenant_id, e.user_id)))
            for e in events]
  times['enrich'] = time.perf_counter() - start
  start = time.perf_counter()
  view_tables = {spec.name: {} for spec in VIEWS}
  for e in events:
    t = micros(e.event_time)
    for spec in VIEWS:
      table = view_tables[spec.name]
      for s in window_starts(t, spec.size_s, spec.period_s):
        key = (s, spec.key(e))
        acc = table.get(key) or table.setdefault(key, new_accumulator())
        add_event(acc, t, e.user_id)
  view_rows = {spec.name: [view_row(spec, s, k, acc, 'ON_TIME', now)
                           for (s, k), acc in view_tables[spec.name].items()]
               for spec in VIEWS}
  times['views'] = time.perf_counter() - start
  start = time.perf_counter()
  rows = {tables.EVENTS.name: [event_row(e, now) for e in events],
          tables.DEAD_LETTERS.name: [dead_letter_row(d, now) for d in letters]}
  rows.update(view_rows)
  con = connect(db_path)
  for name, table_rows in rows.items():
    con.register('staged', pa.Table.from_pylist(
        table_rows, schema=tables.arrow_schema(tables.TABLES[name])))
    con.execute('INSERT INTO %s SELECT * FROM staged' % name)
    con.unregister('staged')
  con.close()
  times['hot write'] = time.perf_counter() - start
  start = time.perf_counter()
  partitions = {}
  for row in rows[tables.EVENTS.name]:
    partitions.setdefault(partition_of(row), []).append(row)
  for (date, tenant), part in partitions.items():
    folder = os.path.join(cold_path, 'events', 'ingest_date=%s' % date,
                          'tenant_id=%s' % tenant)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(part, schema=tables.arrow_schema(
        tables.EVENTS)), os.path.join(folder, 'part-0.parquet'), compression='zstd')
  times['cold write'] = time.perf_counter() - start
  counts['events_written'] = len(events)
  counts['dead_letters'] = len(letters)
  return times, counts
