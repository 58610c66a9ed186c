"""`Batch`: many records as one element; coders for it and for Arrow tables."""
import pickle

import pyarrow as pa

from apache_beam import coders
from apache_beam.coders import coder_impl

__all__ = ['Batch', 'BatchCoder', 'ArrowTableCoder', 'split_batch',
           'arrow_ipc_bytes', 'read_arrow_ipc']


class Batch(object):
  """A list of records as one element.

  Not a list subclass on purpose: Beam's default coder walks a list item by item
  (and pickles each datetime and dict alone); an unknown class is pickled in one
  call, which makes moving a batch between steps several times cheaper.
  """
  __slots__ = ('items',)

  def __init__(self, items):
    self.items = list(items)

  def __reduce__(self):
    return Batch, (self.items,)

  def __iter__(self):
    return iter(self.items)

  def __len__(self):
    return len(self.items)

  def __eq__(self, other):
    return isinstance(other, Batch) and self.items == other.items

  def __repr__(self):
    return 'Batch(%d)' % len(self.items)


def _estimated_size(batch):
  """The batch's encoded size estimated from the size of one item of its kind.

  Beam samples element sizes for its byte-count metrics even when the element
  never leaves the fused stage; with the default coder each sample pickled a
  whole batch of thousands of records (measured: ~10% of a run).
  """
  if not isinstance(batch, Batch):  # a type inferred too widely upstream
    return len(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL))
  items = batch.items
  if not items:
    return 8
  kind = type(items[0])
  size = _ITEM_SIZES.get(kind)
  if size is None:  # measured once per kind of item and process
    size = _ITEM_SIZES[kind] = len(pickle.dumps(items[0], pickle.HIGHEST_PROTOCOL))
  return 8 + size * len(items)


_ITEM_SIZES = {}


class BatchCoder(coders.Coder):
  """Pickles a `Batch` in one call; estimates its size cheaply (see above)."""

  def encode(self, batch):
    return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)

  def decode(self, encoded):
    return pickle.loads(encoded)

  def estimate_size(self, batch):
    return _estimated_size(batch)

  def to_type_hint(self):
    return Batch

  def _create_impl(self):
    return coder_impl.CallbackCoderImpl(self.encode, self.decode,
                                        _estimated_size)


def arrow_ipc_bytes(table: pa.Table, options=None) -> bytes:
  """An Arrow table as one IPC stream (`options`: e.g. its compression)."""
  sink = pa.BufferOutputStream()
  with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
    writer.write_table(table)
  return sink.getvalue().to_pybytes()


def read_arrow_ipc(data: bytes) -> pa.Table:
  """The table of one IPC stream (compressed or not)."""
  return pa.ipc.open_stream(data).read_all()


class ArrowTableCoder(coders.Coder):
  """An Arrow table as an IPC stream; its size is known without encoding.
  (Beam's own `Coder` gives equality, hashing and non-determinism.)"""

  def encode(self, table):
    return arrow_ipc_bytes(table)

  def decode(self, encoded):
    return read_arrow_ipc(encoded)

  def to_type_hint(self):
    return pa.Table

  def _create_impl(self):
    return coder_impl.CallbackCoderImpl(self.encode, self.decode,
                                        lambda table: table.nbytes)


coders.registry.register_coder(Batch, BatchCoder)
coders.registry.register_coder(pa.Table, ArrowTableCoder)


def split_batch(batch, size):
  """A batch (or list) of rows in parts of at most `size` rows, each one
  element; an Arrow table in slices of at most `size` rows."""
  if isinstance(batch, pa.Table):
    return [batch.slice(i, size) for i in range(0, batch.num_rows, size)]
  rows = list(batch)
  return [Batch(rows[i:i + size]) for i in range(0, len(rows), size)]
