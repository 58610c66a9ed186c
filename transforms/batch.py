"""`Batch`: many records as one element of the batched path."""

__all__ = ['Batch', 'split_batch']


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


def split_batch(batch, size):
  """A batch (or list) of rows in parts of at most `size` rows, each one element."""
  rows = list(batch)
  return [Batch(rows[i:i + size]) for i in range(0, len(rows), size)]
