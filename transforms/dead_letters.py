"""All dead letters in one PCollection, counted per kind.

Every stage's dead-letter output is flattened here, so the dead-letter sink and
the counters see every letter exactly once.
"""
import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.records import ERROR_KINDS, LATE_EVENT
from transforms import counters

__all__ = ['CollectDeadLetters']


class _CountFn(beam.DoFn):

  def setup(self):
    ns = counters.NAMESPACE
    self._total = Metrics.counter(ns, counters.DEAD_LETTERS)
    self._by_kind = {
        kind: Metrics.counter(ns, counters.dead_letter_counter(kind))
        for kind in ERROR_KINDS}

  def process(self, letter):
    # late_event letters name events that were stored anyway (contract
    # section 2): counted by kind, not in the identity's dead-letter total.
    if letter.error_kind != LATE_EVENT:
      self._total.inc()
    self._by_kind[letter.error_kind].inc()
    yield letter


class CollectDeadLetters(beam.PTransform):
  """Flattens dead-letter PCollections and counts them per kind."""

  def expand(self, letter_collections):
    return (
        tuple(letter_collections)
        | 'Flatten' >> beam.Flatten()
        | 'CountPerKind' >> beam.ParDo(_CountFn()))
