"""The output directory as a record one process owns: its lock, `--overwrite`, and what FDEN was plugged into.

TensorFlow-free, so `scripts/train.py`'s preflight can use it in about a second.

Lock. `claim(output_dir)` holds `fcntl.flock` on `<output_dir>/.lock` for the whole run. The kernel releases
a flock when its process dies, however it dies, so a lock left by a killed run is simply taken over; the
holder's pid is written into the file, only to name it in the error a second process gets. (flock also works
on NFS since Linux 2.6.12, where it is emulated with byte-range locks.)

Overwrite. `--overwrite` starts afresh: the earlier run is renamed to `<output_dir>.old-<UTC time>` in one
`rename` (atomic: a crash leaves either the old run in place or moved aside, never half of it) and a fresh,
empty `output_dir` is created.

Plugged network. `plugged_record` identifies the network FDEN is trained on by a SHA-256 of its weights'
bytes: the files of an `--encoder`/`--decoder` (a `.keras` file, or every file of a SavedModel folder), the
newest checkpoint of an `--ali_dir`, or the variables of a network handed over in Python. The record is
written into `config.json` and compared on a re-run like any other configuration, so FDEN trained on one
network's codes is never silently reused with another's.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time

from absl import logging

from fden_tf import files

LOCK_FILE = ".lock"
# What marks a folder as holding a run (pipeline.py's layout).
RUN_ENTRIES = ("config.json", "ali", "fden", "metrics.json")


class OutputDirLocked(ValueError):
  """Another live process trains in the output directory."""


# ---------------------------------------------------------------------------------------------------------
# The lock.


def _read_pid(fd):
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 64).decode(errors="replace").strip()
  return int(text) if text.isdigit() else None


def locked_error(output_dir, pid):
  who = f"process {pid}" if pid else "another process"
  lock = os.path.join(output_dir, LOCK_FILE)
  return OutputDirLocked(f"--output_dir {output_dir} is in use by {who} (lock {lock}); wait for it to finish "
                         "or stop it, or pass another --output_dir")


def lock_holder(output_dir):
  """The pid of the live process holding `output_dir`'s lock (0 when its pid is unknown), else None. Writes
  nothing: a folder without a lock file is free."""
  path = os.path.join(output_dir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _read_pid(fd) or 0
  finally:
    os.close(fd)  # also releases the shared lock when it was granted
  return None


def _lock(output_dir):
  """Creates `output_dir` and takes its lock; returns the lock file's descriptor. The pid written into it
  names this process in a second one's error."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    fd = os.open(os.path.join(output_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise ValueError(f"--output_dir {output_dir} is not writable ({e.strerror}); choose another folder") \
        from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    pid = _read_pid(fd)
    os.close(fd)
    raise locked_error(output_dir, pid) from None
  previous = _read_pid(fd)
  if previous and previous != os.getpid():
    logging.info("took over the lock of %s from process %d, which no longer holds it", output_dir, previous)
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  return fd


def holds_run(output_dir) -> bool:
  return any(os.path.exists(os.path.join(output_dir, name)) for name in RUN_ENTRIES)


def _aside_name(output_dir):
  stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
  base = f"{os.path.normpath(os.path.abspath(output_dir))}.old-{stamp}"
  name, n = base, 1
  while os.path.exists(name):
    n += 1
    name = f"{base}-{n}"
  return name


def move_aside(output_dir) -> str:
  """Renames `output_dir` to `<output_dir>.old-<UTC time>` (one atomic rename); returns the new name."""
  aside = _aside_name(output_dir)
  try:
    os.rename(output_dir, aside)
  except OSError as e:
    raise ValueError(f"--overwrite cannot move {output_dir} aside to {aside} ({e.strerror}); move or remove "
                     "it yourself") from None
  return aside


@contextlib.contextmanager
def claim(output_dir, overwrite=False, enabled=True):
  """Holds `output_dir`'s lock while the block runs (creating the folder); with `overwrite`, an earlier run in
  it is first moved aside (see the module docstring) and the block starts on an empty folder. Yields the
  folder the earlier run was moved to, or None. enabled=False (a cluster's non-chief worker, which writes
  nothing there) does nothing."""
  if not enabled:
    yield None
    return
  fd = _lock(output_dir)
  aside = None
  try:
    if overwrite and holds_run(output_dir):
      # Held while renaming, so no other process is writing the run being moved.
      aside = move_aside(output_dir)
      new_fd = _lock(output_dir)
      os.close(fd)
      fd = new_fd
      os.remove(os.path.join(aside, LOCK_FILE))
      logging.warning("--overwrite: moved the earlier run in %s aside to %s; every stage starts afresh",
                      output_dir, aside)
    yield aside
  finally:
    os.close(fd)  # releases the flock; the file stays (removing it would race with a process opening it)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints on disk, without TensorFlow.

_NUMBER = re.compile(r"-(\d+)$")


def checkpoint_number(prefix):
  """The number a checkpoint prefix ends in (`ckpt-40`: 40; -1 for none)."""
  match = _NUMBER.search(prefix)
  return int(match.group(1)) if match else -1


def state_file_paths(directory):
  """The checkpoint prefixes TensorFlow's `checkpoint` state file lists (absolute), or None when the file is
  missing or cannot be parsed (e.g. half-written: TensorFlow then ignores it without a word)."""
  path = os.path.join(directory, "checkpoint")
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError):
    return None
  entry = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths): "([^"\n]+)"$')
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  matched = [entry.match(line) for line in lines if not line.startswith(("all_model_checkpoint_timestamps",
                                                                        "last_preserved_timestamp"))]
  if not matched or not all(matched) or matched[0].group(1) != "model_checkpoint_path":
    return None
  return [m.group(2) if os.path.isabs(m.group(2)) else os.path.join(directory, m.group(2)) for m in matched]


def checkpoint_candidates(directory):
  """Every checkpoint prefix under `directory`, newest (highest number) first: those the state file lists
  and those whose `.index` file is there (a damaged state file hides intact checkpoints)."""
  prefixes = set(state_file_paths(directory) or [])
  if os.path.isdir(directory):
    prefixes |= {os.path.join(directory, n[:-len(".index")]) for n in os.listdir(directory)
                 if n.endswith(".index")}
  return sorted(prefixes, key=lambda p: (checkpoint_number(p), p), reverse=True)


def checkpoint_files(prefix):
  """The files of the checkpoint `prefix`: its .index and .data-* shards (sorted)."""
  folder, base = os.path.split(prefix)
  if not os.path.isdir(folder):
    return []
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if n == base + ".index" or n.startswith(base + ".data-"))


def write_state_file(directory, prefixes):
  """Rewrites the `checkpoint` state file to list `prefixes` (oldest first; the last is the newest), relative
  to `directory` as TensorFlow writes them; atomic. Each gets its .index file's time as its timestamp, so
  TensorFlow's CheckpointManager counts them against max_to_keep (untimed ones it keeps for ever)."""
  names = [os.path.relpath(p, directory) for p in prefixes]
  times = [os.path.getmtime(p + ".index") if os.path.exists(p + ".index") else time.time() for p in prefixes]
  text = f'model_checkpoint_path: "{names[-1]}"\n'
  text += "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names)
  text += "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in times)
  text += f"last_preserved_timestamp: {min(times) - 1.0!r}\n"
  files.atomic_write(os.path.join(directory, "checkpoint"), lambda f: f.write(text))


# ---------------------------------------------------------------------------------------------------------
# What identifies the plugged network.


def content_hash(path) -> str:
  """SHA-256 of a file's bytes (what `sha256sum` prints), or of a folder's files: each relative path and the
  SHA-256 of its bytes, in sorted order."""
  if os.path.isdir(path):
    digest = hashlib.sha256()
    for name in sorted(os.path.relpath(os.path.join(root, n), path)
                       for root, _, found in os.walk(path) for n in found):
      digest.update(name.encode() + b"\0" + content_hash(os.path.join(path, name)).encode())
    return digest.hexdigest()
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _checkpoint_hash(prefix):
  digest = hashlib.sha256()
  for path in checkpoint_files(prefix):
    digest.update(os.path.basename(path).encode() + b"\0" + content_hash(path).encode())
  return digest.hexdigest()


def variables_hash(variables):
  """SHA-256 of variables' shapes, dtypes and values (objects with `.numpy()`), in order; None for none."""
  variables = list(variables)
  if not variables:
    return None
  digest = hashlib.sha256()
  for v in variables:
    value = v.numpy()
    digest.update(f"{value.dtype}{value.shape}".encode() + value.tobytes())
  return digest.hexdigest()


def plugged_record(output_dir, ali_dir=None, plugged=None) -> dict:
  """What FDEN is trained on: {"kind": "ali"} for the run's own ALI (the config identifies it), the newest
  checkpoint of `ali_dir`, the files of `plugged` (a pair of paths, or an object with `paths`, as
  plugin.load_saved leaves), or else a plugged object's variables. "sha256" values are what is compared."""
  if plugged is None and (not ali_dir or os.path.abspath(ali_dir) == os.path.abspath(output_dir)):
    return {"kind": "ali"}
  if plugged is None:
    newest = next((p for p in checkpoint_candidates(os.path.join(ali_dir, "ali", "checkpoints"))
                   if len(checkpoint_files(p)) >= 2), None)
    return {"kind": "ali_dir", "ali_dir": os.path.abspath(ali_dir),
            "checkpoint": newest and os.path.basename(newest), "sha256": newest and _checkpoint_hash(newest)}
  paths = plugged if isinstance(plugged, (tuple, list)) else getattr(plugged, "paths", None)
  if paths:
    for path in paths:
      if not os.path.exists(path):
        raise FileNotFoundError(f"no saved model at {path}")
    return {"kind": "saved", **{role: {"path": os.path.abspath(p), "sha256": content_hash(p)}
                                for role, p in zip(("encoder", "decoder"), paths)}}
  return {"kind": getattr(plugged, "name", "plugged"), "sha256": variables_hash(plugged.variables)}


def _hashes(record):
  """The parts of a plugged record that identify the network (paths may move; contents may not change)."""
  return {"kind": record.get("kind"), "sha256": record.get("sha256"),
          **{role: (record.get(role) or {}).get("sha256") for role in ("encoder", "decoder")}}


def _describe(record):
  if record.get("kind") == "saved":
    return ", ".join(f"{role} {record[role]['path']} (sha256 {record[role]['sha256'][:12]})"
                     for role in ("encoder", "decoder"))
  if record.get("kind") == "ali_dir":
    return f"--ali_dir {record['ali_dir']} ({record['checkpoint']}, sha256 {(record['sha256'] or '')[:12]})"
  if record.get("kind") == "ali":
    return "the ALI trained in the run itself"
  return f"a {record.get('kind')} network (weights sha256 {(record.get('sha256') or '?')[:12]})"


def recorded_plugged(output_dir):
  """The plugged record of `output_dir/config.json`, or None (none there, or a run older than the record)."""
  try:
    with open(os.path.join(output_dir, "config.json"), encoding="utf-8") as f:
      record = json.load(f).get("plugged")
  except (OSError, ValueError, AttributeError):
    return None
  return record if isinstance(record, dict) else None


def check_plugged(output_dir, record):
  """Refuses `output_dir` when its run was trained on another network than `record` describes."""
  recorded = recorded_plugged(output_dir)
  if record is None or recorded is None or _hashes(recorded) == _hashes(record):
    return
  raise ValueError(f"--output_dir {output_dir} holds a run on another plugged network "
                   f"({_describe(recorded)}; now {_describe(record)}); pass a new --output_dir, or "
                   "--overwrite to start afresh")


def check_overwrite(output_dir, ali_dir):
  """--overwrite moves the whole output directory aside: refused when it holds the --ali_dir being plugged."""
  if not ali_dir:
    return
  out, ali = os.path.abspath(output_dir), os.path.abspath(ali_dir)
  if ali == out or ali.startswith(out + os.sep):
    raise ValueError(f"--overwrite would move aside {output_dir}, which holds the --ali_dir {ali_dir} being "
                     "plugged; pass another --output_dir")
