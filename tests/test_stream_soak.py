"""The streaming soak in small, as CI can afford: a generated stream (retries,
bad records of every kind, blank lines, late and too-late events) through the
local streaming runner, micro-batched, and every table checked against what
the stream holds (`benchmarks.stream_soak`; its 2,000,000-event run is in
docs/reliability.md)."""
import json
import os

from tests.cli import run_module


def test_stream_soak_in_small_holds_every_identity(tmp_path):
  # Batches of 500: 18 minutes of event time each, as the 2,000,000-event
  # soak's 5,000 are 14 (a watermark step of hours would make an event
  # three hours behind its batch's end not yet too late).
  done = run_module('benchmarks.stream_soak', '--events', '20000', '--hours',
                    '12', '--batch_size', '500', '--workdir', str(tmp_path))
  checks = [line for line in done.stdout.splitlines()
            if line.startswith(('ok ', 'FAIL'))]
  # Seven checks of the tables against the stream, nine of `verify`: the
  # run's counters against the tables, the outbox drained, and each view
  # against its recount from the stored events.
  assert len(checks) == 16 and all(c.startswith('ok ') for c in checks), \
      done.stdout
  assert 'run stream-soak: records read 20000' in done.stdout
  with open(os.path.join(str(tmp_path), 'manifest.json')) as f:
    manifest = json.load(f)
  # The stream holds what the checks are about.
  assert manifest['duplicates'] > 500 and manifest['too_late'] > 0
  assert manifest['late'] > 10 and len(manifest['bad']) == 5
  assert 'PSS at each tenth of the records' in done.stdout
