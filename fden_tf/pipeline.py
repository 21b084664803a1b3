"""The whole job, `train_and_evaluate(config, output_dir)`: data -> ALI -> latent cache -> FDEN -> few-shot
evaluation -> translation figure. The output directory is the record of the run:

    <output_dir>/config.json        the resolved configuration
    <output_dir>/ali/               ALI checkpoints, train_log.jsonl and network.json (absent with --ali_dir)
    <output_dir>/fden/              FDEN checkpoints and train_log.jsonl
    <output_dir>/metrics.json       few-shot accuracy (f_ide, and z / f_sty baselines), ALI reconstruction
    <output_dir>/translation.png    the paper's Figure 4 layout
"""

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from fden_tf import config as config_lib
from fden_tf import distribute
from fden_tf import export as export_lib
from fden_tf import fden as fden_lib
from fden_tf import metrics as metrics_lib
from fden_tf import fewshot
from fden_tf import files
from fden_tf import plugin
from fden_tf import preflight
from fden_tf import progress as progress_lib
from fden_tf import projector
from fden_tf import run_state
from fden_tf import runs
from fden_tf import summaries as summaries_lib
from fden_tf import train_ali
from fden_tf import train_fden
from fden_tf import training_loop
from fden_tf import visualize
from fden_tf.data import augment
from fden_tf.data import episodes
from fden_tf.data import glyphs

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


def _translation_pairs(split, pairs, seed):
  """`pairs` image pairs (a, b) whose classes differ: 2 * pairs distinct classes when the split has that
  many (every row of the figure a new identity), else a class drawn per pair and b's class another one, so
  a split of as few as 2 classes (preflight's minimum) still gets its figure."""
  rng = np.random.default_rng(seed)
  n = split.num_classes
  if n >= 2 * pairs:
    classes = rng.choice(n, size=2 * pairs, replace=False)
    classes_a, classes_b = classes[:pairs], classes[pairs:]
  else:
    classes_a = rng.integers(n, size=pairs)
    classes_b = (classes_a + rng.integers(1, n, size=pairs)) % n  # any class but a's
  pick = lambda c: rng.choice(np.flatnonzero(split.labels == c))
  a = np.array([pick(c) for c in classes_a])
  b = np.array([pick(c) for c in classes_b])
  return split.images[a], split.images[b]


def fden_training_codes(plugged, train_split, z_train, mirrors, jitters=0, seed=0, show_progress=False):
  """FDEN's training codes and labels: the cache `z_train` of `train_split`, followed by the codes of its
  horizontally mirrored images when `mirrors` and of `jitters` randomly jittered copies of it
  (data/augment.py, seeded), each encoded once and labelled as its original."""
  def copies():  # one at a time: each is as large as the split
    if mirrors:
      yield train_split.images[:, :, ::-1]
    for i in range(jitters):
      yield augment.jitter(train_split.images, seed=seed + 1 + i)

  codes = [plugin.encode_all(plugged, images, show_progress=show_progress, desc="caching augmented train latents")
           for images in copies()]
  if not codes:
    return z_train, train_split.labels
  return np.concatenate([z_train, *codes]), np.tile(train_split.labels, 1 + len(codes))


def train_and_evaluate(config: config_lib.Config, output_dir: str, stage: str = "all", ali_dir=None,
                       plugged=None, overwrite=False, show_progress=True, nonfinite_steps=None,
                       export=True, data=None, strategy="auto") -> dict:
  """Runs `stage` ("all", "ali" or "fden") and returns the metrics written to metrics.json.

  plugged: a frozen encoder/decoder (`plugin.FrozenAutoencoder`) to disentangle instead of ALI; with it,
  or with `ali_dir` (an earlier run's output directory), no ALI is trained. Every input is checked before
  anything is written. nonfinite_steps: {"ali": [...], "fden": [...]} steps whose loss is made NaN, to
  test the divergence guard. export: end by exporting the SavedModel (ALI runs only). data: the dataset,
  when the caller has loaded it already (scripts/train.py does, in its TensorFlow-free preflight).
  strategy: where training runs, "auto", "mirrored", "multiworker", "one_device" or a
  `tf.distribute.Strategy` (fden_tf/distribute.py). It is not part of the config, so a run can resume on
  other hardware. Batch sizes stay global. On a cluster only the chief writes `output_dir`; the other
  workers train with it and return after FDEN training.
  """
  # Phase 0: check every input before writing anything. A multi-worker strategy comes first: it must be
  # created before TensorFlow runs anything in the process.
  strategy = distribute.get_strategy(strategy)
  chief = distribute.is_chief(strategy)
  plugged_record = run_state.plugged_record(output_dir, ali_dir, plugged)  # recorded in config.json
  config, data = preflight.check(config, output_dir, stage, ali_dir, plugged is not None, overwrite, data,
                                 plugged_record, writer=chief)
  if plugged is not None:  # shapes, Dim agreement, finiteness: refused here, not after FDEN trained
    plugin.check_plugged(plugged, data.train.images[:2])
  distribute.check_divisible(strategy, config.fden.episodes_per_batch, "--episodes_per_batch")
  if plugged is None and not ali_dir:
    distribute.check_divisible(strategy, config.ali.batch_size, "--batch_size")
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  nonfinite_steps = nonfinite_steps or {}
  timings, metrics = {}, {"stage": stage}
  logging.info("dataset %s: %d train classes (%d images), %d test classes (%d images)", data.name,
               data.train.num_classes, len(data.train.images), data.test.num_classes, len(data.test.images))
  f = config.fden
  test_sampler = episodes.EpisodeSampler(data.test.labels, f.way, f.shot, f.query, "the test split")
  ali_model = None
  if plugged is None and ali_dir:
    ali_model, _ = runs.load_ali(ali_dir)  # checked by preflight; a corrupted checkpoint fails here
    metrics["plugged"] = {"kind": "ali", "ali_dir": os.path.abspath(ali_dir)}
  elif plugged is None:
    with strategy.scope():
      ali_model = train_ali.build_ali(config.ali, data.train.image_shape, data.train.images)
    metrics["plugged"] = {"kind": "ali"}  # trained here: the run directory holds it
  else:
    metrics["plugged"] = {"kind": plugged.name}
  guard = training_loop.Guard(config.max_nonfinite_steps, config.recovery_lr_factor)
  # The chief holds output_dir's lock to the end (a second process there is refused), --overwrite having
  # moved an earlier run aside first (fden_tf/run_state.py).
  with run_state.claim(output_dir, overwrite, enabled=chief), \
      distribute.ScratchDir(chief, output_dir, "run") as record_dir, \
      summaries_lib.RunSummaries(record_dir) as summaries:
    if chief:  # the other workers of a cluster write only to a scratch folder (record_dir)
      _make_output_dir(output_dir)
      files.write_json(os.path.join(output_dir, "config.json"),
                       dict(config.to_dict(), plugged=plugged_record))
    # Phase 1: the plugged network (train ALI, or use the one given).
    t = time.time()
    if plugged is None:
      if not ali_dir:
        ali_workdir = os.path.join(output_dir, "ali")
        if chief:
          os.makedirs(ali_workdir, exist_ok=True)
          files.write_json(os.path.join(ali_workdir, "network.json"),
                           _network_record(config.ali, data.train.image_shape))
        summaries.image_hooks["ali"] = _ali_images(ali_model, data.test.images, config.seed)
        metrics["ali_train"] = train_ali.train(ali_model, config.ali, data.train.images, ali_workdir,
                                               seed=config.seed, show_progress=show_progress,
                                               log_every=config.log_every, guard=guard,
                                               nonfinite_steps=nonfinite_steps.get("ali", ()),
                                               hooks=summaries, strategy=strategy)
      plugged = plugin.from_ali(ali_model)
    timings["ali"] = time.time() - t
    if not chief and stage == "ali":
      return dict(metrics, worker=distribute.worker_name(strategy))
    if ali_model is not None and chief and ali_dir:  # measured where it was trained
      metrics["ali"] = {"reconstruction_mse": train_ali.reconstruction_error(ali_model, data.test.images),
                        "ali_dir_metrics": (runs.finished_metrics(ali_dir) or {}).get("ali")}
    elif ali_model is not None and chief:
      metrics["ali"] = ali_metrics(ali_model, data, output_dir, config)
      _save_ali_figure(os.path.join(output_dir, "samples.png"), ali_model, data.test.images, config.seed)
    if stage == "ali":
      metrics["seconds"] = timings
      files.write_json(os.path.join(output_dir, "metrics.json"), metrics)
      return metrics

    # Phase 2: the latent cache (the plugged network is frozen: encode every image once).
    t = time.time()
    z_train = plugin.encode_all(plugged, data.train.images, show_progress=show_progress,
                                desc="caching train latents")
    z_test = plugin.encode_all(plugged, data.test.images, show_progress=show_progress,
                               desc="caching test latents")
    fden_seed = config.seed if config.fden.seed is None else config.fden.seed
    z_fden, labels_fden = fden_training_codes(plugged, data.train, z_train, config.fden.cache_mirrors,
                                              config.fden.cache_jitters, fden_seed, show_progress)
    timings["cache"] = time.time() - t

    # Phase 3: FDEN.
    t = time.time()
    # FDEN's weights from its own seed, not from wherever ALI's stage left the generator: the main job's FDEN
    # and FDEN alone on its ALI (--stage=fden --ali_dir) are then the same draw.
    keras.utils.set_random_seed(fden_seed)
    with strategy.scope():
      model = fden_lib.FDEN.from_config_section(z_train.shape[1], config.fden)
    images_a, images_b = _translation_pairs(data.test, pairs=4, seed=config.seed)
    summaries.image_hooks["fden"] = lambda: {"fden/translation": visualize.translation_mosaic(
        visualize.translation_grid(plugged, model, images_a, images_b))[None]}
    metrics["fden_train"] = train_fden.train(model, config.fden, z_fden, labels_fden,
                                             os.path.join(output_dir, "fden"), seed=fden_seed,
                                             show_progress=show_progress, log_every=config.log_every,
                                             guard=guard, nonfinite_steps=nonfinite_steps.get("fden", ()),
                                             hooks=summaries, strategy=strategy)
    timings["fden"] = time.time() - t
    if not chief:  # evaluation, figures and export are the chief's
      return dict(metrics, worker=distribute.worker_name(strategy))

    # Phase 4: few-shot evaluation on unseen classes, from f_ide (and baselines on z and f_sty).
    bar = progress_lib.Progress(4, "evaluation", enabled=show_progress, unit="phase")
    bar.postfix = "few-shot episodes"
    t = time.time()
    f_ide, f_sty, _ = train_fden.factorise(model, z_test)
    metrics.update(fewshot_metrics(f_ide, f_sty, z_test, test_sampler, config, pixels=data.test.images))
    timings["evaluation"] = time.time() - t
    bar.update(1, postfix="figures and projector")

    # Phase 5: figures, TensorBoard's projector and hparams, and the record.
    t = time.time()
    grid = visualize.translation_grid(plugged, model, images_a, images_b)
    files.atomic_write(os.path.join(output_dir, "translation.png"),
                       lambda fh: visualize.save_translation_figure(fh, grid), mode="wb")
    _figures(output_dir, f_ide, f_sty, data, config)
    write_projector(summaries.logdir, z_test, f_ide, f_sty, data.test, seed=config.seed)
    summaries.hparams(config.to_dict(), {"fewshot_accuracy": metrics["fewshot"]["accuracy"],
                                         "fewshot_accuracy_z": metrics["fewshot_baselines"]["z"]["accuracy"],
                                         "fewshot_accuracy_f_sty":
                                             metrics["fewshot_baselines"]["f_sty"]["accuracy"]})
    timings["figures"] = time.time() - t
    bar.update(1, postfix="disentanglement metrics")

    # Phase 6: disentanglement measured, not just shown: <output_dir>/disentanglement.json.
    t = time.time()
    disentanglement = metrics_lib.evaluate_models(
        plugged, model, data, config, samples=config.metrics_samples, mi_samples=2 * config.metrics_samples,
        mine_steps=config.metrics_mine_steps, translation_pairs=config.metrics_translation_pairs,
        latents={"train": z_train, "test": z_test})
    metrics_lib.write_results(output_dir, disentanglement)
    timings["disentanglement"] = time.time() - t
    bar.update(1, postfix="SavedModel export")

    # Phase 7: the SavedModel for TF Serving, <output_dir>/saved_models/<name>/<version> (once per run).
    if export and ali_model is not None:
      t = time.time()
      name = os.path.basename(os.path.abspath(output_dir))
      model_dir = os.path.join(output_dir, "saved_models", name)
      versions = export_lib.existing_versions(model_dir)
      metrics["export"] = (os.path.join(model_dir, str(versions[-1])) if versions else
                           export_lib.export(ali_model, model, data.train.image_shape,
                                             os.path.join(output_dir, "saved_models"), name,
                                             {"run_dir": os.path.abspath(output_dir)}))
      timings["export"] = time.time() - t
    bar.update(1, postfix="done")
    bar.close()
    metrics["seconds"] = timings
    files.write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return metrics


def fewshot_metrics(f_ide, f_sty, z_test, test_sampler, config, pixels=None) -> dict:
  """{"fewshot": nearest prototype on f_ide, "fewshot_baselines": {"z", "f_sty"[, "pixels"]}}, all on the
  same `config.fden.eval_episodes` test episodes, drawn from a seed independent of training's. pixels: the
  test images [N, H, W, C]; given, nearest prototype on the raw flattened pixels is the "pixels" baseline
  (what any learned representation has to beat)."""
  seed, n = config.seed + 1_000_003, config.fden.eval_episodes
  result = fewshot.evaluate(f_ide, test_sampler, n, seed)
  result["chance"] = 1.0 / test_sampler.way
  baselines = {"z": fewshot.evaluate(z_test, test_sampler, n, seed),
               "f_sty": fewshot.evaluate(f_sty, test_sampler, n, seed)}
  if pixels is not None:
    baselines["pixels"] = fewshot.evaluate(np.reshape(pixels, (len(pixels), -1)), test_sampler, n, seed)
  return {"fewshot": result, "fewshot_baselines": baselines}


def ali_metrics(ali_model, data, ali_run_dir, config) -> dict:
  """What says whether the plugged ALI is a usable invertible *generative* model: held-out reconstruction
  MSE, the adversarial balance over training (`discriminator`, from the ALI run's train_log) and the
  Fréchet distance of its prior samples (metrics/sample_quality.py)."""
  from fden_tf.metrics import sample_quality
  log = [r for r in training_loop.read_log(os.path.join(ali_run_dir, "ali", "train_log.jsonl"))
         if "d_real" in r]
  mean = lambda key, records: float(np.mean([r[key] for r in records])) if records else None
  # The logged windows of the second half of training, once the game has settled (the first windows after a
  # resume cover fewer steps, so a whole-run mean would depend on where a run was interrupted).
  late = log[len(log) // 2:]
  balance = {"d_real_second_half": mean("d_real", late), "d_fake_second_half": mean("d_fake", late)}
  # "Wins outright": D tells encoder pairs from decoder pairs with near certainty for the whole second half.
  balance["saturated"] = bool(late) and balance["d_real_second_half"] > 0.99 and \
      balance["d_fake_second_half"] < 0.01
  quality = sample_quality.evaluate(ali_model.decode, ali_model.encode, ali_model.latent_dim,
                                    data.train.images, data.train.labels, samples=config.metrics_samples,
                                    seed=config.seed, posterior_variance=ali_model.posterior_variance)
  return {"reconstruction_mse": train_ali.reconstruction_error(ali_model, data.test.images),
          "discriminator": balance, "sample_quality": quality}


def _prior_samples(ali_model, seed, n=32):
  """G_x(z) of `n` fixed prior draws z ~ N(0, I) (the same draws for every figure of a run)."""
  z = np.random.default_rng(seed).standard_normal((n, ali_model.latent_dim)).astype(np.float32)
  return ali_model.decode(z).numpy()


def _save_ali_figure(path, ali_model, test_images, seed, n=32):
  """samples.png: held-out images drawn across the test classes (the first n would be one or two classes),
  ALI's reconstructions of them, and G_x(z) of the run's fixed prior draws."""
  pick = np.sort(np.random.default_rng(seed).choice(len(test_images), min(n, len(test_images)), replace=False))
  held_out = test_images[pick]
  files.atomic_write(path, lambda fh: visualize.save_samples_figure(
      fh, _prior_samples(ali_model, seed, n), held_out, ali_model.reconstruct(held_out).numpy()), mode="wb")


def _ali_images(ali_model, test_images, seed):
  """TensorBoard's view of ALI: samples G_x(z) of fixed prior draws, and fixed test images beside
  G_x(G_z(x))."""
  x = test_images[:8]
  return lambda: {"ali/samples": _prior_samples(ali_model, seed, 16),
                  "ali/reconstructions": visualize.image_pairs(x, ali_model.reconstruct(x).numpy())}


def _figures(output_dir, f_ide, f_sty, data, config):
  """Static figures beside TensorBoard: tsne.png (Figure 3: 5 classes x 20 samples) and curves.png.
  f_ide, f_sty: [N, Dim], the factors of every test sample."""
  rng = np.random.default_rng(config.seed)
  classes = rng.choice(data.test.num_classes, size=min(5, data.test.num_classes), replace=False)
  per_class = min(20, int(data.test.class_counts()[classes].min()))
  pick = np.concatenate([rng.choice(np.flatnonzero(data.test.labels == c), per_class, replace=False)
                         for c in classes])
  files.atomic_write(os.path.join(output_dir, "tsne.png"),
                     lambda fh: visualize.save_tsne_figure(fh, f_ide[pick], f_sty[pick], data.test.labels[pick],
                                                           data.test.class_names, seed=config.seed), mode="wb")
  logs = {stage: training_loop.read_log(os.path.join(output_dir, stage, "train_log.jsonl"))
          for stage in ("ali", "fden")}
  files.atomic_write(os.path.join(output_dir, "curves.png"),
                     lambda fh: visualize.save_curves_figure(fh, logs), mode="wb")


PROJECTOR_POINTS = 500


def write_projector(logdir, z, f_ide, f_sty, split, seed=0, points=PROJECTOR_POINTS):
  """Projector embeddings z, f_ide, f_sty [N, Dim] of up to `points` of `split`'s N samples, with class
  (its parts too, for path-like names: Omniglot's alphabet, character and rotation; for glyphs, the
  ground-truth style values) as metadata and the input images as the sprite."""
  pick = np.sort(np.random.default_rng(seed).choice(len(z), size=min(points, len(z)), replace=False))
  names = [split.class_names[label] for label in split.labels[pick]]
  columns = {"class": names, "label": split.labels[pick].tolist()}
  columns.update(class_name_parts(names))
  if split.styles is not None:
    for k, name in enumerate(glyphs.STYLE_NAMES):
      columns[name] = [f"{v:.3f}" for v in split.styles[pick, k]]
  projector.write_projector(logdir, {"z": z[pick], "f_ide": f_ide[pick], "f_sty": f_sty[pick]}, columns,
                            split.images[pick])


# Columns for the parts of path-like class names, by their number of parts.
NAME_PARTS = {2: ("alphabet", "character"), 3: ("alphabet", "character", "rotation")}


def class_name_parts(names):
  """{column: values} splitting class names that are all paths of the same depth: Omniglot's
  "Alphabet/characterNN[/rotDDD]" gives alphabet, character (and rotation) columns, so the projector can
  colour f_ide by alphabet. Other names give nothing."""
  parts = [name.split("/") for name in names]
  depth = len(parts[0]) if parts else 0
  if depth not in NAME_PARTS or any(len(p) != depth for p in parts):
    return {}
  return {column: [p[i] for p in parts] for i, column in enumerate(NAME_PARTS[depth])}
