"""Batches of records as elements, from the source to decoding, and the
batching steps after it.

Beam's per-element overhead (and, for stateful steps, its state cache
measuring every value it holds with `objsize`) dominates a per-record
pipeline: ~500 records/s locally, 2.5-3 ms of CPU per record on the Fn API
(`docs/benchmarks.md`). So every runner runs batches:

* `ReadRecordBatches`: bounded files to lists of `RawRecord`s.
* `BatchByArrival`: any other source's records (Pub/Sub, Kafka) batched as
  they arrive, within each bundle.
* decoding (`parallel_decode.DecodeTables`) makes one events batch (an Arrow
  table, `schemas.rows.EVENT_BATCH_SCHEMA`) per batch of records, which the
  later stages pass on;
* `Rebatch`: joins the small per-shard batches dedup leaves into full ones.

Batches of records travel with `BatchCoder` (one pickle, a cheap size
estimate), events batches with `ArrowTableCoder`.
"""
import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.utils.windowed_value import WindowedValue

from schemas.registry import load_registry
from transforms.batch import Batch
from transforms.ingest.sources import read_file_records

__all__ = ['Batch', 'ReadRecordBatches', 'Rebatch', 'BatchByArrival']


class _ReadBatchesFn(beam.DoFn):

  def __init__(self, batch_size, registry_path=None):
    self._batch_size = batch_size
    self._registry_path = registry_path

  def setup(self):
    self._registry = load_registry(self._registry_path)

  def process(self, readable_file):
    batch = []
    with readable_file.open() as stream:
      for record in read_file_records(
          stream, readable_file.metadata.path, self._registry):
        batch.append(record)
        if len(batch) >= self._batch_size:
          yield Batch(batch)
          batch = []
    if batch:
      yield Batch(batch)


class ReadRecordBatches(beam.PTransform):
  """Files matching `pattern` to lists of at most `batch_size` RawRecords."""

  def __init__(self, pattern, batch_size=5000, registry_path=None,
               spread_batches=True):
    super().__init__()
    self._pattern, self._batch_size = pattern, batch_size
    self._registry_path = registry_path
    self._spread_batches = spread_batches

  def expand(self, pbegin):
    return (pbegin
            | 'MatchFiles' >> fileio.MatchFiles(self._pattern)
            | 'SpreadFiles' >> beam.Reshuffle()
            | 'OpenFiles' >> fileio.ReadMatches()
            | 'SplitBatches' >> beam.ParDo(_ReadBatchesFn(
                self._batch_size, self._registry_path)).with_output_types(Batch)
            | 'SpreadBatches' >> self._spread())

  def _spread(self):
    # Spreads the batches of one large file over the workers. With one local
    # worker it only costs: the in-process runner would hold every raw batch
    # in memory at this boundary (measured: 2.0 -> 1.45 GB peak and 7% faster
    # on 400,000 events without it).
    if self._spread_batches:
      return beam.Reshuffle().with_output_types(Batch)
    return beam.Map(lambda batch: batch).with_output_types(Batch)


def _joined(parts):
  return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


class _RebatchFn(beam.DoFn):
  """Joins small events batches into batches of about `size` rows, per
  window.

  Dedup splits each batch by shard (`--state_shards` ways), so what leaves
  it is many small batches; every later step costs per batch (a lookup
  request, a gate state write, a staging file), so they are joined again. What is buffered is
  emitted at the end of each bundle: nothing waits past it. Not
  `BatchElements`: that would first make every record an element again.
  """

  def __init__(self, size):
    self._size = size

  def start_bundle(self):
    self._buffers = {}

  def process(self, batch, window=beam.DoFn.WindowParam,
              timestamp=beam.DoFn.TimestampParam):
    key = (window, timestamp)
    parts, rows = self._buffers.get(key, ([], 0))
    parts.append(batch)
    rows += len(batch)
    if rows >= self._size:
      self._buffers.pop(key, None)
      yield _joined(parts)
    else:
      self._buffers[key] = (parts, rows)

  def finish_bundle(self):
    for (window, timestamp), (parts, _) in self._buffers.items():
      yield WindowedValue(_joined(parts), timestamp, [window])
    self._buffers = {}


class Rebatch(beam.PTransform):
  """Events batches in; events batches of about `size` rows out (same rows,
  same order within a batch's window)."""

  def __init__(self, size=5000):
    super().__init__()
    self._size = size

  def expand(self, batches):
    return batches | 'Join' >> beam.ParDo(
        _RebatchFn(self._size)).with_output_types(pa.Table)


class _BatchByArrivalFn(beam.DoFn):
  """Elements to `Batch`es of at most `size` per window, each stamped with the
  latest timestamp among its elements; what is left is emitted at the end of
  the bundle. Not `BatchElements`: in the global window it stamps what it
  emits at the end of a bundle with the window's end, which says nothing of
  when the records arrived."""

  def __init__(self, size):
    self._size = size

  def start_bundle(self):
    self._buffers = {}

  def process(self, element, window=beam.DoFn.WindowParam,
              timestamp=beam.DoFn.TimestampParam):
    items, latest = self._buffers.get(window, ([], timestamp))
    items.append(element)
    latest = max(latest, timestamp)
    if len(items) >= self._size:
      self._buffers.pop(window, None)
      yield WindowedValue(Batch(items), latest, [window])
    else:
      self._buffers[window] = (items, latest)

  def finish_bundle(self):
    for window, (items, latest) in self._buffers.items():
      yield WindowedValue(Batch(items), latest, [window])
    self._buffers = {}


class BatchByArrival(beam.PTransform):
  """Elements in; `Batch`es of at most `size` of them out, each stamped with
  its latest element's timestamp."""

  def __init__(self, size):
    super().__init__()
    self._size = size

  def expand(self, elements):
    return elements | 'Batch' >> beam.ParDo(
        _BatchByArrivalFn(self._size)).with_output_types(Batch)
