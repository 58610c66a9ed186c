"""Drops files of fresh events into a watched folder and prints what lands.

    python -m pipelines.demo_stream --folder data/incoming --hot_sink duckdb:out/stream.duckdb
        [--files 6] [--every_s 5]

Used by `./run_local.sh --streaming` next to a streaming job watching the
folder. Each file holds events from the last minute, retries, and a few events
two hours old (too late for every window: `late_event` dead letters, still
stored in `events`); one file repeats events of an earlier minute, so its late
pane replaces that minute's rows. After each drop it prints the table counts.
"""
import argparse
import datetime
import json
import os
import random
import time

import duckdb

from pipelines.generate import make_event

__all__ = ['main']


def _drop(folder, index, rng, now):
  events = []
  for i in range(40):
    events.append(make_event(rng, 'tenant-%d' % (i % 2), 'user-%d' % (i % 7),
                             rng.choice(['page_view', 'click', 'purchase']),
                             now - datetime.timedelta(seconds=rng.uniform(0, 50))))
  events += [dict(e, trace_id=e['trace_id'] + '-retry') for e in events[:3]]
  events += [make_event(rng, 'tenant-0', 'user-late', 'click',
                        now - datetime.timedelta(hours=2)) for _ in range(2)]
  if index == 3:  # a late pane: events of two minutes ago, within the lateness
    events += [make_event(rng, 'tenant-1', 'user-%d' % i, 'click',
                          now - datetime.timedelta(seconds=125)) for i in range(5)]
  temp = os.path.join(folder, '.drop-%03d.tmp' % index)
  with open(temp, 'w') as f:
    for event in events:
      f.write(json.dumps(event) + '\n')
  os.rename(temp, os.path.join(folder, 'drop-%03d.jsonl' % index))
  return len(events)


def _counts(db):
  try:
    con = duckdb.connect(db, read_only=True)
  except duckdb.Error:
    return 'warehouse busy or not created yet'
  try:
    parts = []
    for table in ('events', 'event_counts_1m', 'active_users_15m', 'dead_letters'):
      parts.append('%s %d' % (table, con.execute(
          'SELECT count(*) FROM %s' % table).fetchone()[0]))
    late = con.execute("SELECT count(*) FROM event_counts_1m "
                       "WHERE pane_timing = 'LATE'").fetchone()[0]
    return ', '.join(parts) + ', late panes %d' % late
  except duckdb.Error as e:
    return 'warehouse busy (%s)' % str(e).split('\n')[0][:60]
  finally:
    con.close()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--folder', required=True)
  parser.add_argument('--hot_sink', required=True)
  parser.add_argument('--files', type=int, default=6)
  parser.add_argument('--every_s', type=float, default=5)
  args = parser.parse_args(argv)
  os.makedirs(args.folder, exist_ok=True)
  db = args.hot_sink.partition(':')[2]
  rng = random.Random(11)
  for index in range(args.files):
    n = _drop(args.folder, index, rng, datetime.datetime.now(datetime.timezone.utc))
    print('dropped drop-%03d.jsonl (%d records)' % (index, n), flush=True)
    time.sleep(args.every_s)
    print('  now: %s' % _counts(db), flush=True)


if __name__ == '__main__':
  main()
