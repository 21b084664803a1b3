"""The whole job, `train_and_evaluate(config, output_dir)`: data -> ALI -> latent cache -> FDEN -> few-shot
evaluation -> translation figure. The output directory is the record of the run:

    <output_dir>/config.json        the resolved configuration
    <output_dir>/ali/               ALI checkpoints and train_log.jsonl (absent when plugging --ali_dir)
    <output_dir>/fden/              FDEN checkpoints and train_log.jsonl
    <output_dir>/metrics.json       few-shot accuracy (f_ide, and z / f_sty baselines), ALI reconstruction
    <output_dir>/translation.png    the paper's Figure 4 layout
"""

import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import fewshot
from fden_tf import plugin
from fden_tf import train_ali
from fden_tf import train_fden
from fden_tf import visualize
from fden_tf.data import datasets
from fden_tf.data import episodes

STAGES = ("all", "ali", "fden")


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


def _check_config(output_dir, config, overwrite):
  """Refuses to mix two configurations in one output directory (resuming needs the same one)."""
  path = os.path.join(output_dir, "config.json")
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      previous = json.load(f)
    if previous != json.loads(config.to_json()):
      raise ValueError(f"{output_dir} holds a run with a different configuration; pass a new --output_dir "
                       "or --overwrite")
  write_json(path, config.to_dict())


def load_ali_run(ali_dir, image_shape):
  """ALI trained earlier by this package: rebuilt from `<ali_dir>/config.json`, weights from its checkpoint."""
  config_path = os.path.join(ali_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"--ali_dir {ali_dir} has no config.json; is it an output directory of this tool?")
  with open(config_path) as f:
    ali_config = config_lib.Config.from_dict(json.load(f)).ali
  model = train_ali.build_ali(ali_config, image_shape)
  train_ali.restore_trained(model, os.path.join(ali_dir, "ali"))
  return model, ali_config


def _translation_pairs(split, pairs, seed):
  rng = np.random.default_rng(seed)
  classes = rng.choice(split.num_classes, size=2 * pairs, replace=False)
  pick = lambda c: rng.choice(np.flatnonzero(split.labels == c))
  a = np.array([pick(c) for c in classes[:pairs]])
  b = np.array([pick(c) for c in classes[pairs:]])
  return split.images[a], split.images[b]


def train_and_evaluate(config: config_lib.Config, output_dir: str, stage: str = "all", ali_dir=None,
                       plugged=None, overwrite=False) -> dict:
  """Runs `stage` ("all", "ali" or "fden") and returns the metrics written to metrics.json.

  plugged: a frozen encoder/decoder (`plugin.FrozenAutoencoder`) to disentangle instead of ALI; with it,
  or with `ali_dir` (an earlier run's output directory), no ALI is trained.
  """
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
  if stage == "ali" and (plugged is not None or ali_dir):
    raise ValueError("--stage=ali trains ALI; it takes neither --ali_dir nor a plugged network")
  if stage == "fden" and plugged is None and not ali_dir:
    raise ValueError("--stage=fden needs a trained network: pass --ali_dir (or --encoder/--decoder)")
  os.makedirs(output_dir, exist_ok=True)
  _check_config(output_dir, config, overwrite)
  keras.utils.set_random_seed(config.seed)
  show = config.progress
  timings, metrics = {}, {"stage": stage}

  # Phase 1: data.
  t = time.time()
  data = datasets.load(config.data)
  timings["data"] = time.time() - t
  logging.info("dataset %s: %d train classes (%d images), %d test classes (%d images)", data.name,
               data.train.num_classes, len(data.train.images), data.test.num_classes, len(data.test.images))
  # Fail on an impossible episode shape before hours of ALI training, not after.
  test_sampler = episodes.EpisodeSampler(data.test.labels, config.fden.way, config.fden.shot,
                                         config.fden.query)
  episodes.EpisodeSampler(data.train.labels, config.fden.way, config.fden.shot, config.fden.query)

  # Phase 2: the plugged network (train ALI, or load one).
  t = time.time()
  ali_model = None
  if plugged is None:
    if ali_dir:
      ali_model, _ = load_ali_run(ali_dir, data.train.image_shape)
    else:
      ali_model = train_ali.build_ali(config.ali, data.train.image_shape, data.train.images)
      train_ali.train(ali_model, config.ali, data.train.images, os.path.join(output_dir, "ali"),
                      seed=config.seed, show_progress=show, log_every=config.log_every)
    plugged = plugin.from_ali(ali_model)
  timings["ali"] = time.time() - t
  if ali_model is not None:
    metrics["ali"] = {"reconstruction_mse": train_ali.reconstruction_error(ali_model, data.test.images)}
  if stage == "ali":
    metrics["seconds"] = timings
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics

  # Phase 3: the latent cache (the plugged network is frozen: encode every image once).
  t = time.time()
  z_train = plugin.encode_all(plugged, data.train.images, show_progress=show, desc="caching train latents")
  z_test = plugin.encode_all(plugged, data.test.images, show_progress=show, desc="caching test latents")
  timings["cache"] = time.time() - t

  # Phase 4: FDEN.
  t = time.time()
  model = fden_lib.FDEN.from_config_section(z_train.shape[1], config.fden)
  train_metrics = train_fden.train(model, config.fden, z_train, data.train.labels,
                                   os.path.join(output_dir, "fden"), seed=config.seed, show_progress=show,
                                   log_every=config.log_every)
  timings["fden"] = time.time() - t

  # Phase 5: few-shot evaluation on unseen classes, from f_ide (and baselines on z and f_sty).
  t = time.time()
  f_ide, f_sty = train_fden.embed(model, z_test)
  eval_seed = config.seed + 1_000_003  # episodes independent of training's seeds
  metrics["fewshot"] = fewshot.evaluate(f_ide, test_sampler, config.fden.eval_episodes, eval_seed)
  metrics["fewshot_baselines"] = {
      "z": fewshot.evaluate(z_test, test_sampler, config.fden.eval_episodes, eval_seed),
      "f_sty": fewshot.evaluate(f_sty, test_sampler, config.fden.eval_episodes, eval_seed)}
  metrics["fewshot"]["chance"] = 1.0 / config.fden.way
  timings["evaluation"] = time.time() - t
  metrics["fden_train"] = train_metrics

  # Phase 6: the translation figure.
  images_a, images_b = _translation_pairs(data.test, pairs=4, seed=config.seed)
  grid = visualize.translation_grid(plugged, model, images_a, images_b)
  atomic_write(os.path.join(output_dir, "translation.png"),
               lambda f: visualize.save_translation_figure(f, grid), mode="wb")
  metrics["seconds"] = timings
  write_json(os.path.join(output_dir, "metrics.json"), metrics)
  return metrics
