"""Writing a run's files so that a reader (or a crash) never sees half of one."""

import json
import os
import tempfile


def atomic_write(path, write_fn, mode="w"):
  """Writes via a temporary file in the same folder, then renames: readers never see half a file."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path, obj):
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"))
