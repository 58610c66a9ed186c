"""The staged DuckDB commit: idempotent, retryable, all or nothing."""
import datetime
import os

import duckdb
import pytest

from schemas import tables
from schemas.records import RawRecord
from schemas.rows import dead_letter_row, event_row
from tests.helpers import as_json, envelope
from transforms.ingest.decode import decode_and_validate
from transforms.sinks.duckdb_sink import commit_memory_limit, commit_staged
from transforms.sinks.staging import write_staging_file

NOW = datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)


def _event_rows(n, start=0):
  rows = []
  for i in range(start, start + n):
    event, _ = decode_and_validate(RawRecord(as_json(envelope(
        trace_id='t-%d' % i, payload__url='/%d' % i))))
    rows.append(event_row(event, NOW))
  return rows


def _count(db, table):
  con = duckdb.connect(db, read_only=True)
  try:
    return con.execute('SELECT count(*) FROM %s' % table).fetchone()[0]
  finally:
    con.close()


def test_staging_file_name_is_derived_from_content(tmp_path):
  rows = _event_rows(3)
  a = write_staging_file(str(tmp_path), tables.STAGED_EVENTS, rows)
  b = write_staging_file(str(tmp_path), tables.STAGED_EVENTS, rows)
  c = write_staging_file(str(tmp_path), tables.STAGED_EVENTS, rows[:2])
  assert a == b != c
  assert sorted(os.listdir(tmp_path / 'events')) == sorted(
      [os.path.basename(a), os.path.basename(c)])


def test_commit_is_idempotent_and_counts_already_stored(tmp_path):
  db, staging = str(tmp_path / 'w.duckdb'), str(tmp_path / 'staging')
  first = write_staging_file(staging, tables.STAGED_EVENTS, _event_rows(5))
  assert commit_staged(db, [('events', first)]) == {'events': (5, 5), 'late_letters': (0, 0)}
  assert not os.path.exists(first)
  again = write_staging_file(staging, tables.STAGED_EVENTS, _event_rows(7))
  assert commit_staged(db, [('events', again)]) == {'events': (7, 2), 'late_letters': (0, 0)}
  assert _count(db, 'events') == 7


def test_commit_retried_after_success_adds_nothing(tmp_path):
  db, staging = str(tmp_path / 'w.duckdb'), str(tmp_path / 'staging')
  path = write_staging_file(staging, tables.STAGED_EVENTS, _event_rows(4))
  commit_staged(db, [('events', path)])
  # The retried commit names files that the first attempt removed.
  assert commit_staged(db, [('events', path)]) == {}
  assert _count(db, 'events') == 4


def test_failed_commit_writes_nothing_and_keeps_staging(tmp_path):
  db, staging = str(tmp_path / 'w.duckdb'), str(tmp_path / 'staging')
  good = write_staging_file(staging, tables.STAGED_EVENTS, _event_rows(3))
  letter, _ = decode_and_validate(RawRecord(b'{bad', 'f:1'))
  letters = write_staging_file(
      staging, tables.DEAD_LETTERS, [dead_letter_row(letter, NOW)])
  broken = os.path.join(staging, 'dead_letters', 'broken.parquet')
  with open(broken, 'wb') as f:
    f.write(b'not parquet')
  with pytest.raises(duckdb.Error):
    commit_staged(db, [('events', good), ('dead_letters', letters),
                       ('dead_letters', broken)])
  assert _count(db, 'events') == 0 and _count(db, 'dead_letters') == 0
  assert os.path.exists(good) and os.path.exists(letters)


def test_same_key_staged_twice_keeps_one_row(tmp_path):
  db, staging = str(tmp_path / 'w.duckdb'), str(tmp_path / 'staging')
  rows = _event_rows(2)
  a = write_staging_file(staging, tables.STAGED_EVENTS, rows)
  b = write_staging_file(staging, tables.STAGED_EVENTS, rows[:1])
  assert commit_staged(db, [('events', a), ('events', b)]) == {'events': (3, 2), 'late_letters': (0, 0)}


def test_memory_limit_bounds_the_commit_and_keeps_its_rows(tmp_path):
  rows = _event_rows(3000)
  staged = {}
  for name in ('free', 'bounded', 'starved'):
    staged[name] = write_staging_file(str(tmp_path / name), tables.STAGED_EVENTS, rows)
  assert commit_staged(str(tmp_path / 'free.duckdb'),
                       [('events', staged['free'])]) == {'events': (3000, 3000), 'late_letters': (0, 0)}
  bounded = str(tmp_path / 'bounded.duckdb')
  assert commit_staged(bounded, [('events', staged['bounded'])],
                       memory_limit='16MB') == {'events': (3000, 3000), 'late_letters': (0, 0)}
  select = 'SELECT * FROM events ORDER BY idempotency_key'
  with duckdb.connect(str(tmp_path / 'free.duckdb'), read_only=True) as a, \
      duckdb.connect(bounded, read_only=True) as b:
    assert a.execute(select).fetchall() == b.execute(select).fetchall()
  # The limit is applied: too little memory fails the commit, which then
  # writes nothing and keeps its staging file for the retry.
  starved = str(tmp_path / 'starved.duckdb')
  with pytest.raises(MemoryError, match='--duckdb_memory_limit'):
    commit_staged(starved, [('events', staged['starved'])], memory_limit='1KB')
  assert _count(starved, 'events') == 0 and os.path.exists(staged['starved'])


def test_auto_memory_limit_makes_room_for_the_commits_index(tmp_path):
  """DuckDB holds the primary-key index of every row a transaction inserts
  in memory: 200,000 rows do not commit under 16 MB; `auto`'s allowance per
  row (here over a 64 MiB base instead of 512 MiB) commits them all, and
  DuckDB's error under too little becomes a MemoryError naming the flag, with
  nothing written."""
  assert commit_memory_limit('auto', 0) == '512MiB'
  assert commit_memory_limit('auto', 10 ** 7, machine_bytes=64 << 30) == '4327MiB'
  # Never more than DuckDB's default, 80% of the machine's memory.
  assert commit_memory_limit('auto', 10 ** 7, machine_bytes=2 << 30) == '2048MiB'
  machine = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert commit_memory_limit('auto', 10 ** 12) == '%dMiB' % -(
      -(machine * 4 // 5) // (1 << 20))
  assert commit_memory_limit('512MB', 10 ** 7) == '512MB'
  assert commit_memory_limit(None, 10 ** 7) is None
  base = _event_rows(1)[0]
  rows = [dict(base, idempotency_key='%064x' % i) for i in range(200000)]
  limit = commit_memory_limit('auto', len(rows), base_bytes=64 << 20)
  assert limit == '141MiB'
  for name, memory in (('small', '16MB'), ('auto', limit)):
    staging = write_staging_file(str(tmp_path / name), tables.STAGED_EVENTS,
                                 rows)
    db = str(tmp_path / (name + '.duckdb'))
    if name == 'small':
      with pytest.raises(MemoryError, match='200000 staged rows'):
        commit_staged(db, [('events', staging)], memory_limit=memory)
      assert _count(db, 'events') == 0 and os.path.exists(staging)
    else:
      assert commit_staged(db, [('events', staging)], memory_limit=memory) == {
          'events': (200000, 200000), 'late_letters': (0, 0)}


def test_memory_limit_must_be_a_size(tmp_path):
  path = write_staging_file(str(tmp_path), tables.STAGED_EVENTS, _event_rows(1))
  with pytest.raises(ValueError, match='memory_limit'):
    commit_staged(str(tmp_path / 'w.duckdb'), [('events', path)],
                  memory_limit="1GB'; DROP TABLE events; --")
  assert os.path.exists(path) and not os.path.exists(tmp_path / 'w.duckdb')
