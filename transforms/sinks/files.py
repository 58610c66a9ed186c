"""Writing and tidying files through Beam's FileSystems (local, gs://, s3://)."""
import os
import uuid

from apache_beam.io.filesystems import FileSystems

__all__ = ['write_atomically', 'remove_empty_local_folders']


def write_atomically(path: str, data: bytes):
  """Writes `data` under a temporary name in the same folder, then renames it,
  so no reader (or retry) ever sees a half-written file at `path`. A failed
  write or rename removes the temporary file and raises."""
  folder = path.rsplit('/', 1)[0]
  # Not the final suffix: a reader's glob must never pick up a file a killed
  # worker left half-written.
  temp = FileSystems.join(folder, '.tmp-%s.partial' % uuid.uuid4().hex)
  try:
    with FileSystems.create(temp) as f:
      f.write(data)
    FileSystems.rename([temp], [path])
  except BaseException:
    if FileSystems.exists(temp):
      FileSystems.delete([temp])
    raise


def remove_empty_local_folders(folders):
  """Removes local folders left empty, and their parent if it is empty too
  (object stores have no folders to remove)."""
  for folder in sorted(folders):
    if FileSystems.get_scheme(folder) is not None:
      continue
    for path in (folder, os.path.dirname(folder)):
      if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)
