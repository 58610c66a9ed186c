"""The lifecycle job removes the staging a killed run left behind, and only that."""
import datetime
import os

import pytest

from pipelines import lifecycle
from pipelines.lifecycle import STAGING_FOLDER
from transforms.sinks.duckdb_connection import connect

NOW = datetime.datetime(2026, 11, 27, 12, tzinfo=datetime.timezone.utc)


def _file(path, age_hours):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(b'staged')
  stamp = (NOW - datetime.timedelta(hours=age_hours)).timestamp()
  os.utime(path, (stamp, stamp))
  return path


def test_idle_staging_folders_are_removed_busy_ones_kept(tmp_path):
  db, cold = str(tmp_path / 'w.duckdb'), str(tmp_path / 'cold')
  connect(db).close()
  killed = [_file(os.path.join(db + '.staging', 'events', 'a.parquet'), 30),
            _file(os.path.join(db + '.staging', 'events', 'b.parquet'), 26),
            _file(os.path.join(cold, STAGING_FOLDER, 'run-1', 'p.arrow'), 48)]
  # A long run: an old piece, and one written an hour ago in the same folder.
  running = [_file(os.path.join(cold, STAGING_FOLDER, 'run-2', 'old.arrow'), 40),
             _file(os.path.join(cold, STAGING_FOLDER, 'run-2', 'new.arrow'), 1),
             _file(os.path.join(db + '.staging', 'dead_letters', 'c.parquet'), 2)]
  flags = ['--hot_sink', 'duckdb:' + db, '--cold_path', cold,
           '--hot_retention_days', '7', '--now', NOW.isoformat()]
  result = lifecycle.run(flags)
  assert result['lifecycle_stale_staging_files_removed'] == 3
  assert not any(os.path.exists(p) for p in killed)
  assert all(os.path.exists(p) for p in running)
  assert lifecycle.run(flags)['lifecycle_stale_staging_files_removed'] == 0
  assert lifecycle.run(flags + ['--staging_idle_hours', '0.5'])[
      'lifecycle_stale_staging_files_removed'] == 3
  assert not os.listdir(os.path.join(cold, STAGING_FOLDER))


def test_staging_idle_hours_must_be_positive(tmp_path, capsys):
  with pytest.raises(SystemExit):
    lifecycle.run(['--hot_sink', 'duckdb:' + str(tmp_path / 'w.duckdb'),
                   '--cold_path', str(tmp_path), '--hot_retention_days', '1',
                   '--staging_idle_hours', '0'])
  assert '--staging_idle_hours' in capsys.readouterr().err
