"""Names of the pipeline's Beam counters, shared by the steps and the run summary.

Every counter lives in one namespace so `run()` can read them back from the
`PipelineResult` and write them to `pipeline_metrics`.
"""
__all__ = ['NAMESPACE', 'dead_letter_counter']

NAMESPACE = 'analytics'
INPUT_RECORDS = 'input_records'
BLANK_LINES = 'blank_lines'
VALID_EVENTS = 'valid_events'
UNKNOWN_FIELDS = 'unknown_fields'
DUPLICATES = 'duplicates'
EVENTS_WRITTEN = 'events_written'
EVENTS_ALREADY_STORED = 'events_already_stored'
# Events rows handed to the hot sink (counted where they are staged, once
# per row: a streaming commit may read a staged row again). Those its
# commits did not store were stored already: `events_already_stored` is
# `events_staged - events_written` (`pipelines.summary.read_counters`).
EVENTS_STAGED = 'events_staged'
DEAD_LETTERS = 'dead_letters'
DEAD_LETTERS_WRITTEN = 'dead_letters_written'
ENRICHMENT_FALLBACKS = 'enrichment_fallbacks'
# v1 purchases whose amount minor units cannot hold (`amount_minor` empty,
# `amount_decimal` exact): landed, and counted.
UPCAST_INEXACT = 'upcast_inexact_amounts'


def dead_letter_counter(kind: str) -> str:
  """The counter of one dead-letter kind, e.g. `dead_letters_malformed`."""
  return 'dead_letters_%s' % kind


def recorded() -> tuple:
  """The counters every run's `pipeline_metrics` holds (0 when nothing was
  counted): contract section 4's, and the ones the project's checks use."""
  from schemas.records import ERROR_KINDS
  return (INPUT_RECORDS, BLANK_LINES, VALID_EVENTS, EVENTS_STAGED,
          EVENTS_WRITTEN, EVENTS_ALREADY_STORED, DUPLICATES, DEAD_LETTERS,
          DEAD_LETTERS_WRITTEN, ENRICHMENT_FALLBACKS, UNKNOWN_FIELDS,
          UPCAST_INEXACT) + tuple(dead_letter_counter(k) for k in ERROR_KINDS)
