"""TensorBoard: one summary writer per run, at `<output_dir>/tensorboard`.

Scalars are tagged `<stage>/<name>` (e.g. `fden/l_m`, `ali/d_real`) with the stage's own step; images are
`ali/samples`, `ali/reconstructions` and `fden/translation`; the hparams plugin gets the resolved
configuration and the final few-shot accuracy, so `tensorboard --logdir runs/` compares runs in one table.
"""

import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

LOGDIR = "tensorboard"


def flatten_config(d, prefix=""):
  """{"fden": {"way": 5}} -> {"fden.way": 5}; None becomes "" (hparams takes bool, number or string)."""
  flat = {}
  for key, value in d.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten_config(value, name + "."))
    else:
      flat[name] = "" if value is None else value
  return flat


class RunSummaries:
  """The run's summary writer, and the training loop's hooks that feed it."""

  def __init__(self, output_dir):
    self.logdir = os.path.join(output_dir, LOGDIR)
    self.writer = tf.summary.create_file_writer(self.logdir)
    self.image_hooks = {}  # stage name -> fn(step) returning {tag: images [N, H, W, C]}

  def scalars(self, prefix, metrics, step):
    with self.writer.as_default(step=step):
      for name, value in metrics.items():
        if isinstance(value, (int, float, np.floating, np.integer)) and name != "step":
          tf.summary.scalar(f"{prefix}/{name}", float(value))
    self.writer.flush()

  def images(self, tags_to_images, step, max_outputs=16):
    with self.writer.as_default(step=step):
      for tag, images in tags_to_images.items():
        tf.summary.image(tag, np.clip(np.asarray(images, np.float32), 0, 1), max_outputs=max_outputs)
    self.writer.flush()

  # Training-loop hooks (training_loop.run calls these).
  def on_log(self, stage, step, metrics):
    self.scalars(stage.lower(), metrics, step)

  def on_skip(self, stage, step, terms, skipped_total):
    self.scalars(stage.lower(), {"skipped_steps": skipped_total}, step)

  def on_checkpoint(self, stage, step):
    hook = self.image_hooks.get(stage.lower())
    if hook is not None:
      self.images(hook(), step)

  def hparams(self, config_dict, metrics):
    """The resolved configuration beside its results (`hparams/...` scalars), for the hparams table."""
    with self.writer.as_default(step=0):
      hp.hparams(flatten_config(config_dict))
      for name, value in metrics.items():
        tf.summary.scalar(f"hparams/{name}", float(value))
    self.writer.flush()

  def close(self):
    self.writer.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
