"""How much memory a DuckDB commit may use (`--duckdb_memory_limit`).

DuckDB keeps the primary-key index of every row one transaction inserts in
memory and cannot spill it, so `auto` grows with the rows a commit stages;
a fixed size too small fails the commit with a MemoryError naming the flag.
"""
import os
import re

import duckdb

__all__ = ['MEMORY_LIMIT_PATTERN', 'commit_memory_limit', 'out_of_memory',
           'AUTO_BASE_BYTES', 'AUTO_BYTES_PER_ROW']

# A DuckDB memory size as `SET memory_limit` takes it (checked before it is
# written into the statement; `--duckdb_memory_limit` is checked by it too).
MEMORY_LIMIT_PATTERN = r'auto|[0-9]+(\.[0-9]+)?\s?[KMGT]i?B'

# DuckDB keeps the primary-key index of every row one transaction inserts in
# memory, whatever its memory_limit, besides a fixed working set: measured on
# DuckDB 2.0, one commit of 0.93M events rows needed at most 256MB, 1.86M at
# most 512MB, 3.7M at most 1GB, 7.4M more than 1.7GB (2.2GB was enough), and
# 200,000 more than 77MB. Besides the index, the other tables' rows (a
# 200,000-record run's 55 MB of oversized dead letters) and a working set
# that varies from run to run: the same staged files of such a run (210,000
# rows) committed under 200MB and failed under 300MB, and once failed under
# 256 MiB + 400 bytes per row; under 400MB and more they always committed.
# `auto` allows 512 MiB and 400 bytes per staged row.
AUTO_BASE_BYTES = 512 << 20
AUTO_BYTES_PER_ROW = 400


def _machine_bytes():
  """80% of physical memory, DuckDB's own default limit (None if unknown)."""
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') * 4 // 5
  except (ValueError, OSError, AttributeError):  # not a POSIX system
    return None


def commit_memory_limit(setting, staged_rows, base_bytes=AUTO_BASE_BYTES,
                        machine_bytes=None):
  """The memory_limit a commit of `staged_rows` rows runs under: `setting`
  itself (a DuckDB size), or for `auto` `base_bytes` and what the rows'
  index needs, never more than DuckDB's own default of 80% of the machine's
  memory (`machine_bytes`, measured when None): past that the commit fails
  with a MemoryError instead of the machine swapping or killing the job;
  None for None (DuckDB's default)."""
  if setting is None:
    return None
  if not re.fullmatch(MEMORY_LIMIT_PATTERN, setting):
    raise ValueError('memory_limit: expected auto or a size such as 1GB, got %r'
                     % setting)
  if setting != 'auto':
    return setting
  needed = base_bytes + staged_rows * AUTO_BYTES_PER_ROW
  ceiling = machine_bytes or _machine_bytes()
  if ceiling:
    needed = min(needed, ceiling)
  return '%dMiB' % -(-needed // (1 << 20))


def out_of_memory(error) -> bool:
  # A COMMIT that runs out wraps it in a TransactionException.
  return isinstance(error, duckdb.OutOfMemoryException) or (
      isinstance(error, duckdb.Error) and 'allocate' in str(error))
