"""Starts the API: `python -m serving --hot_sink duckdb:PATH --cold_path PATH
--port N [--host 127.0.0.1] [--catalog FILE] [--api_keys FILE]
[--hot_retention_days 7] [--bigquery_endpoint URL]`.

API keys come from `--api_keys FILE` or the environment variable
`ANALYTICS_API_KEYS` (the same JSON); they are never logged.
"""
import argparse
import sys

__all__ = ['main', 'build_app']


def build_app(args):
  from serving.app import create_app
  from serving.backends import ColdParquet, HotBigQuery, HotDuckDB
  from serving.config import load_api_keys, load_catalog
  kind, _, target = args.hot_sink.partition(':')
  if kind == 'duckdb' and target:
    hot = HotDuckDB(target)
  elif kind == 'bigquery' and target.count('.') == 1:
    project, dataset = target.split('.')
    hot = HotBigQuery(project, dataset, args.bigquery_endpoint)
  else:
    raise ValueError('--hot_sink: expected duckdb:PATH or '
                     'bigquery:PROJECT.DATASET, got %r' % args.hot_sink)
  try:
    catalog = load_catalog(args.catalog)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError('--catalog: %s' % e) from None
  try:
    keys = load_api_keys(args.api_keys)
  except (OSError, ValueError) as e:
    raise ValueError('--api_keys: %s' % e) from None
  cold = ColdParquet(args.cold_path) if args.cold_path else None
  return create_app(hot, cold, catalog, keys, args.hot_retention_days)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--hot_sink', required=True)
  parser.add_argument('--cold_path', default=None)
  parser.add_argument('--port', type=int, default=8080)
  parser.add_argument('--host', default='127.0.0.1')
  parser.add_argument('--catalog', default=None)
  parser.add_argument('--api_keys', default=None)
  parser.add_argument('--hot_retention_days', type=float, default=7.0)
  parser.add_argument('--bigquery_endpoint', default=None)
  args = parser.parse_args(argv)
  try:
    app = build_app(args)
  except ValueError as e:
    print('error: %s' % e, file=sys.stderr)
    sys.exit(2)
  import uvicorn
  uvicorn.run(app, host=args.host, port=args.port, log_level='warning',
              access_log=False, h11_max_incomplete_event_size=16384)


if __name__ == '__main__':
  main()
