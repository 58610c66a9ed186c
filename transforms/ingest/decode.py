"""The decode step's names: `decode_and_validate` (one record, Beam-free, in
`transforms/ingest/decoding.py`) and the `dead_letters` output tag. The step itself decodes
batches (`batched.DecodeBatches`, `parallel_decode.DecodeTables`).
"""
from transforms.ingest.decoding import as_raw_record, decode_and_validate

__all__ = ['decode_and_validate', 'as_raw_record', 'DEAD_LETTERS']

DEAD_LETTERS = 'dead_letters'
