"""Checkpoints of Keras 3 models and optimizers with `tf.train.Checkpoint`.

Keras 3 layers kept in Python lists are invisible to TensorFlow's object-graph tracking, so
`tf.train.Checkpoint(model=model)` silently saves only some weights. We checkpoint each object's full,
ordered variable list instead (as Keras's own weight files do): the order is fixed by the architecture,
and a restore checks every count and shape.

Damage. A run killed mid-save, a full disk or a bad copy can leave a half-written `checkpoint` state file, a
newest checkpoint without its `.index` or with a truncated `.data`. TensorFlow then either ignores every
checkpoint (the state file is unreadable: training would silently restart from step 0) or fails.
`restore_newest` instead tries every checkpoint present, newest first (the CheckpointManager keeps
`max_to_keep` of them), and logs which one it took and why the newer ones were passed over.
"""

import os

import tensorflow as tf
from absl import logging

from fden_tf import run_state


class VariableList(tf.Module):
  """A trackable holder of an object's variables, in `obj.variables` order."""

  def __init__(self, variables, name=None):
    super().__init__(name=name)
    self.variables_in_order = list(variables)


def checkpoint(**objects) -> tf.train.Checkpoint:
  """A checkpoint of Keras models/optimizers (their `.variables`) and plain tf.Variables, by keyword."""
  tracked = {}
  for key, obj in objects.items():
    tracked[key] = obj if isinstance(obj, tf.Variable) else VariableList(obj.variables, name=key)
  return tf.train.Checkpoint(**tracked)


def restore(ckpt: tf.train.Checkpoint, path: str, partial: bool = False):
  """Restores `path` into `ckpt`, failing loudly when a variable is missing or has another shape.

  partial: the checkpoint may hold more objects than `ckpt` (e.g. optimizers when only weights are wanted).
  """
  try:
    status = ckpt.restore(path)
    if partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except (ValueError, AssertionError, IndexError, tf.errors.OpError) as e:
    raise ValueError(f"checkpoint {path} cannot be read or does not fit this model: "
                     f"{str(e).splitlines()[0]}") from None
  return status


def restore_newest(ckpt: tf.train.Checkpoint, directory: str, what: str, partial: bool = False,
                   repair: bool = False):
  """Restores the newest checkpoint under `directory` that restores, passing over damaged newer ones (see
  the module docstring). Returns its path, or None when `directory` holds no checkpoint at all.

  what: names the stage in messages. repair: rewrite the state file when it was unreadable or listed a
  damaged checkpoint, so that TensorFlow's CheckpointManager knows the intact ones again (and max_to_keep
  deletes them in turn). Raises ValueError when checkpoints are present but none restores.
  """
  listed = run_state.state_file_paths(directory)
  candidates = run_state.checkpoint_candidates(directory)
  if listed is None and os.path.exists(os.path.join(directory, "checkpoint")):
    logging.warning("%s: the checkpoint state file %s is damaged (half-written?); looking for the "
                    "checkpoints themselves", what, os.path.join(directory, "checkpoint"))
  passed_over = []
  for prefix in candidates:
    try:
      restore(ckpt, prefix, partial)
    except ValueError as e:
      passed_over.append(f"{os.path.basename(prefix)} ({_reason(prefix, e)})")
      continue
    if passed_over or listed is None:
      logging.warning("%s: restored %s, the newest checkpoint that restores%s", what, prefix,
                      "; passed over " + "; ".join(passed_over) if passed_over else "")
    if repair and (passed_over or listed is None):
      number = run_state.checkpoint_number(prefix)
      older = [p for p in candidates
               if run_state.checkpoint_number(p) < number and os.path.exists(p + ".index")]
      run_state.write_state_file(directory, sorted(older, key=run_state.checkpoint_number) + [prefix])
    return prefix
  if passed_over:
    raise ValueError(f"no {what} checkpoint under {directory} can be restored: {'; '.join(passed_over)}; "
                     "move that folder aside to train the stage afresh")
  if repair and listed is None and os.path.exists(os.path.join(directory, "checkpoint")):
    os.remove(os.path.join(directory, "checkpoint"))  # names no checkpoint that exists: nothing to keep
  return None


def _reason(prefix, error):
  """Why the checkpoint `prefix` did not restore, in a few words."""
  names = [os.path.basename(p) for p in run_state.checkpoint_files(prefix)]
  if not any(n.endswith(".index") for n in names):
    return "its .index file is missing"
  if not any(".data-" in n for n in names):
    return "its .data file is missing"
  return str(error).split(": ", 1)[-1]


def restore_latest_weights(workdir: str, what: str, **objects) -> str:
  """Restores only `objects` (e.g. the model, not its optimizer) from the newest checkpoint under
  `<workdir>/checkpoints` that restores (`restore_newest`); `what` names it in the error. Returns the
  checkpoint path."""
  directory = os.path.join(workdir, "checkpoints")
  latest = restore_newest(checkpoint(**objects), directory, what, partial=True)
  if latest is None:
    raise FileNotFoundError(f"no {what} checkpoint under {directory}")
  return latest


def readable_checkpoint(directory: str):
  """The newest checkpoint under `directory` whose index can be read (for its variable shapes), or None."""
  for prefix in run_state.checkpoint_candidates(directory):
    try:
      tf.train.load_checkpoint(prefix)
      return prefix
    except (ValueError, tf.errors.OpError):
      continue
  return None
