"""The cold tier's pieces: a batch's rows put in a file before they are grouped.

Why: the cold writer gathers each partition's rows with a GroupByKey, and a
runner holds what it groups until the writer runs; Beam's local runner holds
all of it in memory until the end of a batch run (measured: ~160 MB of LZ4
Arrow per million events, growing with the input). With pieces the grouping
carries only references (path, range of record batches), a few dozen bytes.

A piece is one Arrow IPC file per input batch, LZ4-compressed, holding each
partition group of the batch as a range of record batches; the file's footer
indexes them, so a writer reads only its own ranges. Pieces are written under
`<cold_root>/.staging/<run>/`, a folder no reader globs, named by a digest of
their bytes (a retried bundle with the same rows writes the same file), and
the run's folder is removed once every partition file is written
(`remove_pieces`), orphans of failed bundles included. A killed run leaves
its folder behind; nothing reads it, and the lifecycle job removes it once it
has been idle for a day (`--staging_idle_hours`).
"""
import collections
import hashlib

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.files import remove_empty_local_folders, write_atomically

__all__ = ['PieceRef', 'STAGING_FOLDER', 'pieces_folder', 'write_piece',
           'read_pieces', 'remove_pieces']

STAGING_FOLDER = '.staging'

# One group's rows inside a piece: record batches [start, stop) of the file.
PieceRef = collections.namedtuple('PieceRef', ['path', 'start', 'stop'])

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression='lz4')


def pieces_folder(root: str, run: str) -> str:
  """Where one run's pieces go: under the cold root, beside `events/`."""
  return FileSystems.join(root, STAGING_FOLDER, run)


def write_piece(folder: str, groups) -> list:
  """Writes [(key, Arrow table)] (one schema) as one piece file.

  Returns [(key, PieceRef)], one per group, in the same order."""
  groups = list(groups)
  sink = pa.BufferOutputStream()
  refs, written = [], 0
  with pa.ipc.new_file(sink, groups[0][1].schema, options=_IPC_OPTIONS) as out:
    for key, table in groups:
      batches = table.combine_chunks().to_batches()
      for batch in batches:
        out.write_batch(batch)
      refs.append((key, written, written + len(batches)))
      written += len(batches)
  data = sink.getvalue().to_pybytes()
  path = FileSystems.join(folder, hashlib.sha256(data).hexdigest()[:32] + '.arrow')
  write_atomically(path, data)
  return [(key, PieceRef(path, start, stop)) for key, start, stop in refs]


def read_pieces(refs, schema: pa.Schema) -> pa.Table:
  """The rows the references point at, as one table (file by file)."""
  by_path = {}
  for ref in refs:
    by_path.setdefault(ref.path, []).append(ref)
  batches = []
  for path in sorted(by_path):
    with FileSystems.open(path, mime_type='application/octet-stream',
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
      reader = pa.ipc.open_file(pa.PythonFile(f, mode='r'))
      for ref in by_path[path]:
        batches.extend(reader.get_batch(i) for i in range(ref.start, ref.stop))
  return pa.Table.from_batches(batches, schema=schema)


def remove_pieces(folder: str) -> int:
  """Deletes a run's pieces folder (once every partition is written);
  returns how many files it held. A second call finds nothing to delete."""
  found = [m.path for m in FileSystems.match(
      [FileSystems.join(folder, '*')])[0].metadata_list]
  if found:
    FileSystems.delete(found)
  remove_empty_local_folders([folder])
  return len(found)
