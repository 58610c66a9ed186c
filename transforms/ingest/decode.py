"""The decode step's names: `decode_and_validate` (one record, Beam-free, in
`decoding.py`) and the tag of its dead-letter output. The step itself decodes
batches of records to events batches (`parallel_decode.DecodeTables`).
"""
from transforms.ingest.decoding import as_raw_record, decode_and_validate

__all__ = ['decode_and_validate', 'as_raw_record', 'DEAD_LETTER_TAG']

# The decode step's output tag of its dead letters (not the counter
# `counters.DEAD_LETTERS`, nor the table `tables.DEAD_LETTERS`).
DEAD_LETTER_TAG = 'dead_letters'
