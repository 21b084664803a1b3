"""Checkpoints of Keras 3 models and optimizers with `tf.train.Checkpoint`.

Keras 3 layers kept in Python lists are invisible to TensorFlow's object-graph tracking, so
`tf.train.Checkpoint(model=model)` silently saves only some weights. We checkpoint each object's full,
ordered variable list instead (as Keras's own weight files do): the order is fixed by the architecture,
and a restore checks every count and shape.
"""

import os

import tensorflow as tf


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


def restore_latest_weights(workdir: str, what: str, **objects) -> str:
  """Restores only `objects` (e.g. the model, not its optimizer) from the newest checkpoint under
  `<workdir>/checkpoints`; `what` names it in the error. Returns the checkpoint path."""
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if latest is None:
    raise FileNotFoundError(f"no {what} checkpoint under {os.path.join(workdir, 'checkpoints')}")
  restore(checkpoint(**objects), latest, partial=True)
  return latest
