"""All dead letters in one PCollection, counted per kind.

Every stage's dead-letter output is flattened here, so the dead-letter sink and
the counters see every letter exactly once.
"""
import apache_beam as beam

from schemas.records import LATE_EVENT
from transforms import counters
from transforms.tallies import TALLIES, Tally

__all__ = ['CollectDeadLetters']


class _CountFn(beam.DoFn):

  def setup(self):
    self._tally = Tally()

  def process(self, letter):
    # late_event letters name events that were stored anyway (contract
    # section 2): counted by kind, not in the identity's dead-letter total.
    if letter.error_kind != LATE_EVENT:
      self._tally.inc(counters.DEAD_LETTERS)
    self._tally.inc(counters.dead_letter_counter(letter.error_kind))
    yield letter

  def finish_bundle(self):
    yield from self._tally.emit()


class CollectDeadLetters(beam.PTransform):
  """Flattens dead-letter PCollections and counts them per kind: the letters
  (`result.letters`) and the counts (`result.tallies`)."""

  def expand(self, letter_collections):
    return (
        tuple(letter_collections)
        | 'Flatten' >> beam.Flatten()
        | 'CountPerKind' >> beam.ParDo(_CountFn()).with_outputs(
            TALLIES, main='letters'))
