"""The two mends for the local streaming runner (`pipelines/local_streaming`):
exact counters are checked end to end by test_watch (a CLI streaming run
reconciled by `verify`); here the kept DoFn specs are the runner's own
answers, and they stay one per DoFn class or function however many bundles
and runs (keeping each bundle's copy once grew ~100 bytes per record)."""
import apache_beam as beam
from apache_beam.transforms import userstate

from pipelines import local_streaming
from tests.test_streaming import run_late_data_stream
from transforms.views.late_gate import _LateDataGateFn
from transforms.dedup.shards import _ExpiringDedupBatchFn


def _counting(name):
  spec = userstate.CombiningValueStateSpec(name, sum)
  return beam.ParDo(lambda kv, count=beam.DoFn.StateParam(spec): [kv])


def test_kept_specs_are_the_runners_answers_and_stay_few(tmp_path):
  assert local_streaming.mend()
  assert local_streaming.mend()  # once per process: nothing wraps twice
  inspect = userstate.get_dofn_specs
  known = inspect.known
  views = _LateDataGateFn(600)
  states, timers = inspect(views)
  assert {s.name for s in states} == {'floor_and_ends'}
  assert len(timers) == 1 and inspect(_LateDataGateFn(60)) == (states, timers)
  assert inspect(_ExpiringDedupBatchFn(60))[1] and not inspect(beam.Map(len).dofn)[0]
  for dofn in (views, _ExpiringDedupBatchFn(60), beam.Map(len).dofn, _counting('a').fn,
               _counting('b').fn):  # one code object, two specs
    assert inspect(dofn) == inspect.original(dofn)
  run_late_data_stream(hot_sink='duckdb:' + str(tmp_path / 'a.duckdb'),
                       cold_path=str(tmp_path / 'a'))
  after_one = len(known)
  # a nested class of Beam's (its qualified name has a dot) is kept too
  assert beam.WindowInto.WindowIntoFn in known
  run_late_data_stream(hot_sink='duckdb:' + str(tmp_path / 'b.duckdb'),
                       cold_path=str(tmp_path / 'b'))
  assert len(known) == after_one < 100, sorted(map(str, known))[:20]
