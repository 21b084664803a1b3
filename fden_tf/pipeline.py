"""The whole job, `train_and_evaluate(config, output_dir)`: data -> ALI -> latent cache -> FDEN -> few-shot
evaluation -> translation figure. The output directory is the record of the run:

    <output_dir>/config.json        the resolved configuration
    <output_dir>/ali/               ALI checkpoints, train_log.jsonl and network.json (absent with --ali_dir)
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


def _check_output_dir(output_dir, config, overwrite):
  """Refuses to mix two configurations in one output directory (resuming needs the same one). Read-only."""
  path = os.path.join(output_dir, "config.json")
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      previous = json.load(f)
    if previous != json.loads(config.to_json()):
      raise ValueError(f"--output_dir {output_dir} holds a run of a different configuration; pass a new "
                       "--output_dir, or --overwrite to replace it")


def _make_output_dir(output_dir):
  """Creates `output_dir` and proves it writable, with a one-line error if not."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=output_dir):
      pass
  except OSError as e:
    raise ValueError(f"--output_dir {output_dir} is not writable ({e.strerror}); choose another folder") \
        from None


def _network_record(ali_config, image_shape):
  return {"architecture": ali_config.architecture, "latent_dim": ali_config.latent_dim,
          "width": ali_config.width, "image_shape": list(image_shape)}


def load_ali_run(ali_dir, image_shape):
  """ALI trained earlier by this package: rebuilt from `<ali_dir>/config.json`, weights from its checkpoint.

  Checks that it was trained on images of `image_shape` (H, W, C). Returns (ALI, its ALIConfig).
  """
  config_path = os.path.join(ali_dir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"--ali_dir {ali_dir} has no config.json; is it an output directory of this tool?")
  with open(config_path) as f:
    ali_config = config_lib.Config.from_dict(json.load(f)).ali
  network_path = os.path.join(ali_dir, "ali", "network.json")
  if os.path.exists(network_path):
    with open(network_path) as f:
      trained_on = tuple(json.load(f)["image_shape"])
    if trained_on != tuple(image_shape):
      raise ValueError(f"--ali_dir {ali_dir} holds an ALI for {'x'.join(map(str, trained_on))} images but the "
                       f"dataset has {'x'.join(map(str, image_shape))}; use an ALI trained on this dataset")
  model = train_ali.build_ali(ali_config, image_shape)
  try:
    train_ali.restore_trained(model, os.path.join(ali_dir, "ali"))
  except FileNotFoundError:
    raise FileNotFoundError(f"--ali_dir {ali_dir} holds no ALI checkpoint (train one with --stage=ali)") \
        from None
  return model, ali_config


def _translation_pairs(split, pairs, seed):
  rng = np.random.default_rng(seed)
  classes = rng.choice(split.num_classes, size=2 * pairs, replace=False)
  pick = lambda c: rng.choice(np.flatnonzero(split.labels == c))
  a = np.array([pick(c) for c in classes[:pairs]])
  b = np.array([pick(c) for c in classes[pairs:]])
  return split.images[a], split.images[b]


def train_and_evaluate(config: config_lib.Config, output_dir: str, stage: str = "all", ali_dir=None,
                       plugged=None, overwrite=False, show_progress=True, nonfinite_steps=None) -> dict:
  """Runs `stage` ("all", "ali" or "fden") and returns the metrics written to metrics.json.

  plugged: a frozen encoder/decoder (`plugin.FrozenAutoencoder`) to disentangle instead of ALI; with it,
  or with `ali_dir` (an earlier run's output directory), no ALI is trained. Every input is checked before
  anything is written. nonfinite_steps: {"ali": [...], "fden": [...]} steps whose loss is made NaN, to
  test the divergence guard.
  """
  # Phase 0: check every input before writing anything.
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
  if stage == "ali" and (plugged is not None or ali_dir):
    raise ValueError("--stage=ali trains ALI; it takes neither --ali_dir nor a plugged network")
  if stage == "fden" and plugged is None and not ali_dir:
    raise ValueError("--stage=fden needs a trained network: pass --ali_dir (or --encoder/--decoder)")
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  nonfinite_steps = nonfinite_steps or {}
  timings, metrics = {}, {"stage": stage}
  t = time.time()
  data = datasets.load(config.data)
  timings["data"] = time.time() - t
  logging.info("dataset %s: %d train classes (%d images), %d test classes (%d images)", data.name,
               data.train.num_classes, len(data.train.images), data.test.num_classes, len(data.test.images))
  f = config.fden
  test_sampler = episodes.EpisodeSampler(data.test.labels, f.way, f.shot, f.query)
  episodes.EpisodeSampler(data.train.labels, f.way, f.shot, f.query)
  ali_model = None
  if plugged is None and ali_dir:
    ali_model, ali_config = load_ali_run(ali_dir, data.train.image_shape)
    config = config.replace(ali=ali_config)  # the run's record names the network it really plugged
    metrics["plugged"] = {"kind": "ali", "ali_dir": os.path.abspath(ali_dir)}
  elif plugged is None:
    ali_model = train_ali.build_ali(config.ali, data.train.image_shape, data.train.images)
    metrics["plugged"] = {"kind": "ali", "ali_dir": os.path.abspath(output_dir)}
  else:
    metrics["plugged"] = {"kind": plugged.name}
  _check_output_dir(output_dir, config, overwrite)
  _make_output_dir(output_dir)
  write_json(os.path.join(output_dir, "config.json"), config.to_dict())
  guard = (config.max_nonfinite_steps, config.recovery_lr_factor)

  # Phase 1: the plugged network (train ALI, or use the one given).
  t = time.time()
  if plugged is None:
    if not ali_dir:
      ali_workdir = os.path.join(output_dir, "ali")
      os.makedirs(ali_workdir, exist_ok=True)
      write_json(os.path.join(ali_workdir, "network.json"),
                 _network_record(config.ali, data.train.image_shape))
      metrics["ali_train"] = train_ali.train(ali_model, config.ali, data.train.images, ali_workdir,
                                             seed=config.seed, show_progress=show_progress,
                                             log_every=config.log_every, guard=guard,
                                             nonfinite_steps=nonfinite_steps.get("ali", ()))
    plugged = plugin.from_ali(ali_model)
  timings["ali"] = time.time() - t
  if ali_model is not None:
    metrics["ali"] = {"reconstruction_mse": train_ali.reconstruction_error(ali_model, data.test.images)}
  if stage == "ali":
    metrics["seconds"] = timings
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics

  # Phase 2: the latent cache (the plugged network is frozen: encode every image once).
  t = time.time()
  z_train = plugin.encode_all(plugged, data.train.images, show_progress=show_progress,
                              desc="caching train latents")
  z_test = plugin.encode_all(plugged, data.test.images, show_progress=show_progress,
                             desc="caching test latents")
  timings["cache"] = time.time() - t

  # Phase 3: FDEN.
  t = time.time()
  model = fden_lib.FDEN.from_config_section(z_train.shape[1], config.fden)
  metrics["fden_train"] = train_fden.train(model, config.fden, z_train, data.train.labels,
                                           os.path.join(output_dir, "fden"), seed=config.seed,
                                           show_progress=show_progress, log_every=config.log_every,
                                           guard=guard, nonfinite_steps=nonfinite_steps.get("fden", ()))
  timings["fden"] = time.time() - t

  # Phase 4: few-shot evaluation on unseen classes, from f_ide (and baselines on z and f_sty).
  t = time.time()
  f_ide, f_sty = train_fden.embed(model, z_test)
  eval_seed = config.seed + 1_000_003  # episodes independent of training's seeds
  metrics["fewshot"] = fewshot.evaluate(f_ide, test_sampler, config.fden.eval_episodes, eval_seed)
  metrics["fewshot"]["chance"] = 1.0 / config.fden.way
  metrics["fewshot_baselines"] = {
      "z": fewshot.evaluate(z_test, test_sampler, config.fden.eval_episodes, eval_seed),
      "f_sty": fewshot.evaluate(f_sty, test_sampler, config.fden.eval_episodes, eval_seed)}
  timings["evaluation"] = time.time() - t

  # Phase 5: the translation figure.
  images_a, images_b = _translation_pairs(data.test, pairs=4, seed=config.seed)
  grid = visualize.translation_grid(plugged, model, images_a, images_b)
  atomic_write(os.path.join(output_dir, "translation.png"),
               lambda fh: visualize.save_translation_figure(fh, grid), mode="wb")
  metrics["seconds"] = timings
  write_json(os.path.join(output_dir, "metrics.json"), metrics)
  return metrics
