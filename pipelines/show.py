"""Prints a few rows of each warehouse table and the cold tier's files.

    python -m pipelines.show --hot_sink duckdb:out/warehouse.duckdb --cold_path out/cold
"""
import argparse
import os

from schemas import tables
from transforms.sinks.duckdb_connection import connect

__all__ = ['main']


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--hot_sink', required=True)
  parser.add_argument('--cold_path', default=None)
  parser.add_argument('--rows', type=int, default=3)
  args = parser.parse_args(argv)
  con = connect(args.hot_sink.partition(':')[2], read_only=True)
  try:
    for name in tables.TABLES:
      count = con.execute('SELECT count(*) FROM %s' % name).fetchone()[0]
      print('\n== %s: %d rows' % (name, count))
      order = ', '.join(tables.TABLES[name].key)
      if name == 'pipeline_metrics':
        order = 'recorded_at DESC, name'  # the newest run first
      cursor = con.execute('SELECT * FROM %s ORDER BY %s LIMIT %d' % (
          name, order, args.rows))
      columns = [d[0] for d in cursor.description]
      for row in cursor.fetchall():
        print('  ' + ', '.join('%s=%s' % (c, _short(v)) for c, v in zip(columns, row)))
  finally:
    con.close()
  if args.cold_path and os.path.isdir(args.cold_path):
    files = [os.path.join(d, f) for d, _, fs in os.walk(args.cold_path)
             for f in fs if f.endswith('.parquet')]
    print('\n== cold tier: %d Parquet files, %d bytes under %s' % (
        len(files), sum(os.path.getsize(f) for f in files), args.cold_path))
    for path in sorted(files)[:args.rows]:
      print('  ' + os.path.relpath(path, args.cold_path))


def _short(value, limit=60):
  text = str(value)
  return text if len(text) <= limit else text[:limit] + '...'


if __name__ == '__main__':
  main()
