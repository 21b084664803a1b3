"""A run's output directory read back: its configuration, its frozen network and its trained FDEN.

Every later stage (evaluation, export, the projector) starts from here, so a run directory is all that
needs to be kept.
"""

import dataclasses
import json
import os

import tensorflow as tf

from fden_tf import checkpoints
from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import plugin
from fden_tf import preflight
from fden_tf import train_ali
from fden_tf import train_fden


@dataclasses.dataclass
class Run:
  config: config_lib.Config
  plugged: object  # plugin.FrozenAutoencoder
  fden: fden_lib.FDEN
  ali: object = None  # ali.ALI when the plugged network is ALI
  fden_checkpoint: str = None  # the checkpoint FDEN was restored from (the newest that restores)
  ali_checkpoint: str = None  # likewise for ALI


load_config = config_lib.load


def ali_image_shape(ali_run_dir: str) -> tuple:
  """(H, W, C) of the images the ALI under `ali_run_dir` was trained on: from `ali/network.json`, or for
  older runs from the generator's per-pixel bias [H, W, C], ALI's only rank-3 variable."""
  recorded = preflight.recorded_image_shape(ali_run_dir)
  if recorded is not None:
    return recorded
  latest = checkpoints.readable_checkpoint(os.path.join(ali_run_dir, "ali", "checkpoints"))
  if latest is None:
    raise FileNotFoundError(f"{ali_run_dir} holds no ALI checkpoint (train one with --stage=ali)")
  shapes = [s for k, s in tf.train.load_checkpoint(latest).get_variable_to_shape_map().items()
            if k.startswith("ali/") and len(s) == 3]
  if len(shapes) != 1:
    raise ValueError(f"cannot tell the image shape of the ALI checkpoint {latest}")
  return tuple(int(d) for d in shapes[0])


def load_ali(ali_run_dir: str, image_shape=None):
  """ALI trained by this package under `ali_run_dir`, rebuilt from its config and restored; checks that it
  fits images of `image_shape` when given (callers that ran `preflight.check` have already checked).
  Returns (ALI, its ALIConfig)."""
  ali_config = (preflight.check_ali_dir(ali_run_dir, image_shape) if image_shape is not None
                else load_config(ali_run_dir).ali)
  model = train_ali.build_ali(ali_config, ali_image_shape(ali_run_dir))
  try:
    model.restored_from = train_ali.restore_trained(model, os.path.join(ali_run_dir, "ali"))
  except FileNotFoundError:
    raise FileNotFoundError(f"--ali_dir {ali_run_dir} holds no ALI checkpoint (train one with --stage=ali)") \
        from None
  return model, ali_config


def plugged_ali_dir(run_dir: str) -> str:
  """Where a run's ALI lives: the `--ali_dir` its metrics.json records, else the run itself."""
  path = os.path.join(run_dir, "metrics.json")
  if os.path.exists(path):
    with open(path) as f:
      plugged = json.load(f).get("plugged") or {}
    if plugged.get("kind") not in (None, "ali"):
      raise ValueError(f"{run_dir} plugged your own network ({plugged['kind']}); pass it as `plugged=`")
    if plugged.get("ali_dir"):
      return plugged["ali_dir"]
  return run_dir


def load_run(run_dir: str, plugged=None) -> Run:
  """A finished run: its Config, frozen network (ALI unless `plugged` is given) and trained FDEN."""
  config = load_config(run_dir)
  if not os.path.isdir(os.path.join(run_dir, "fden", "checkpoints")):
    raise ValueError(f"{run_dir} has no fden/checkpoints: FDEN was not trained there (a --stage=ali run?)")
  ali_model = None
  if plugged is None:
    ali_model, _ = load_ali(plugged_ali_dir(run_dir))
    plugged = plugin.from_ali(ali_model)
  model = fden_lib.FDEN.from_config_section(config.ali.latent_dim if ali_model is not None else
                                            _fden_dim(run_dir), config.fden)
  fden_checkpoint = train_fden.restore_trained(model, os.path.join(run_dir, "fden"))
  return Run(config, plugged, model, ali_model, fden_checkpoint,
             getattr(ali_model, "restored_from", None))


def _fden_dim(run_dir):
  """FDEN's Dim from its checkpoint (the first Dense kernel of D_dec is [Dim, hidden])."""
  latest = checkpoints.readable_checkpoint(os.path.join(run_dir, "fden", "checkpoints"))
  if latest is None:
    raise FileNotFoundError(f"{run_dir}/fden/checkpoints holds no readable FDEN checkpoint")
  shapes = tf.train.load_checkpoint(latest).get_variable_to_shape_map()
  first = shapes["fden/variables_in_order/0/.ATTRIBUTES/VARIABLE_VALUE"]
  return int(first[0])


def finished_metrics(run_dir: str, config=None):
  """The metrics.json of a run that finished (with `config`, when given), else None: benchmarks read
  finished runs back instead of re-evaluating them."""
  path = os.path.join(run_dir, "metrics.json")
  if not os.path.exists(path) or (config is not None and preflight.holds_other_config(run_dir, config)):
    return None  # not finished, or another configuration (which the pipeline then refuses)
  with open(path) as f:
    metrics = json.load(f)
  return metrics if metrics.get("stage") == "ali" or "fewshot" in metrics else None
