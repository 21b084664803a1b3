"""Writing a run's files so that a reader (or a crash) never sees half of one.

`tempfile` creates its files 0600 and folders 0700; a run's record and its exports must be readable by others
(a model server running as another user), so what is renamed into place gets the modes `open` and `mkdir`
would have given it: 0666 and 0777 under the process's umask (0644 and 0755 under the usual 022).
"""

import json
import os
import tempfile


def umask() -> int:
  """The process's umask (read by setting and restoring it: POSIX offers no other way)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def usual_mode(path):
  """Gives a file 0666 or a folder 0777, under the umask: what `open`/`mkdir` would have made."""
  os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask())


def atomic_write(path, write_fn, mode="w"):
  """Writes via a temporary file in the same folder, then renames: readers never see half a file."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path), suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      write_fn(f)
    usual_mode(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path, obj):
  atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n"))
