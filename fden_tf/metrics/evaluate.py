"""Every disentanglement metric of a trained FDEN, in one dictionary (`<run_dir>/disentanglement.json`).

    results = evaluate_models(plugged, model, data, config)   # in memory, e.g. at the end of training
    results = evaluate_run("runs/glyphs")                     # rebuilt from a run directory, and written there
    print(format_report(results))

Five families, each in its own module: identity alignment (`alignment`), independence of the factors
(`independence`), plug-in fidelity (`fidelity`), what mixing two images' factors changes (`mixing`) and, on
datasets that know every sample's true style and identity (glyphs), metrics against that ground truth
(`ground_truth`). Everything is measured on the unseen test classes; the samples-hungry metrics on a fixed
random subsample of them.
"""

import os
import time

import keras
import numpy as np

from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import files
from fden_tf import plugin
from fden_tf import runs
from fden_tf import train_fden
from fden_tf.data import datasets
from fden_tf.metrics import alignment
from fden_tf.metrics import fidelity
from fden_tf.metrics import ground_truth
from fden_tf.metrics import independence
from fden_tf.metrics import mixing

RESULTS_FILE = "disentanglement.json"
# The pipeline's evaluation episodes (pipeline.train_and_evaluate), so alignment matches metrics.json.
EVAL_SEED_OFFSET = 1_000_003


def subsample(n: int, size: int, seed: int) -> np.ndarray:
  """Sorted indices of min(size, n) of n samples, without replacement."""
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n, size=min(size, n), replace=False))


def _ground_truth(plugged, model, data, z_test, factors, held, latents, samples, pairs, seed) -> dict:
  """The glyphs-only family: style R^2, linear identity probe, translation fidelity."""
  f_ide, f_sty = factors
  train = subsample(len(data.train.labels), samples, seed)
  z_train = (latents["train"][train] if "train" in latents
             else plugin.encode_all(plugged, data.train.images[train]))
  tr_ide, tr_sty, _ = train_fden.factorise(model, z_train)
  fit = {"f_ide": tr_ide, "f_sty": tr_sty, "z": z_train}
  score = {"f_ide": f_ide, "f_sty": f_sty, "z": z_test}
  style = {name: ground_truth.style_r2(fit[name], data.train.styles[train], score[name][held],
                                       data.test.styles[held]) for name in fit}
  probe = {name: ground_truth.identity_probe(score[name], data.test.labels, seed) for name in score}
  return {
      "style_r2": {"train_samples": int(len(train)), "test_samples": int(len(held)), **style},
      "identity_probe": {"classes": int(data.test.num_classes), "chance": 1.0 / data.test.num_classes,
                         **probe},
      "translation": ground_truth.translation_fidelity(plugged, model, data.test, z_test, pairs, seed)}


def evaluate_models(plugged, model: fden_lib.FDEN, data, config: config_lib.Config, samples: int = 2000,
                    mi_samples: int = 4000, mine_steps: int = 600, translation_pairs: int = 500,
                    latents: dict = None, way: int = None, shot: int = None, query: int = None) -> dict:
  """All metrics for a plugged network, a trained FDEN, the run's `FewShotData` and its `Config`.

  samples: held-out test samples (and training samples for the style regression) used by the distance
    correlation, fidelity and ground-truth metrics; alignment always uses every test sample.
  mi_samples, mine_steps: held-out samples and training steps of each fresh DV statistician (three runs).
  latents: optional {"train": [N_train, Dim], "test": [N_test, Dim]} codes already computed by the
    pipeline (the latent cache), so nothing is encoded twice.
  way, shot, query: the alignment's few-shot task, where it differs from the run's (None: the run's), e.g.
    5-shot episodes for an FDEN trained and reported on 1-shot.
  Sets Keras' global seed to config.seed (the fresh statisticians' initialisation) for repeatable numbers.
  """
  latents = latents or {}
  seed = config.seed
  keras.utils.set_random_seed(seed)
  timings, t = {}, time.time()
  z_test = latents["test"] if "test" in latents else plugin.encode_all(plugged, data.test.images)
  f_ide, f_sty, z_tilde = train_fden.factorise(model, z_test)
  held = subsample(len(z_test), samples, seed)
  results = {"dataset": data.name, "test_classes": int(data.test.num_classes),
             "held_out_samples": int(len(held))}
  timings["encode"] = time.time() - t

  # Phase 1: identity alignment, on the pipeline's own evaluation episodes.
  t = time.time()
  c = config.fden
  pixels = np.reshape(data.test.images, (len(data.test.images), -1))  # what any representation must beat
  results["alignment"] = alignment.fewshot_alignment(
      {"f_ide": f_ide, "z": z_test, "f_sty": f_sty, "pixels": pixels}, data.test.labels, way or c.way,
      shot or c.shot, query or c.query, c.eval_episodes, seed + EVAL_SEED_OFFSET)
  timings["alignment"] = time.time() - t

  # Phase 2: independence of the factors (fresh statisticians, distance correlation).
  t = time.time()
  order = np.random.default_rng(seed).permutation(len(z_test))[:max(mi_samples, samples)]
  results["independence"] = independence.factor_independence(
      f_ide[order], f_sty[order], z_test[order], mine_steps, seed, dcor_samples=samples)
  timings["independence"] = time.time() - t

  # Phase 3: plug-in fidelity, and what each factor changes when two images' factors are mixed.
  t = time.time()
  results["fidelity"] = fidelity.plugin_fidelity(plugged, data.test.images[held], z_test[held],
                                                 z_tilde[held])
  timings["fidelity"] = time.time() - t
  t = time.time()
  results["mixing"] = mixing.factor_mixing(plugged, model, z_test, data.test.labels, translation_pairs, seed)
  timings["mixing"] = time.time() - t

  # Phase 4: ground truth (glyphs only; other datasets know labels, not styles).
  t = time.time()
  results["ground_truth"] = None
  if ground_truth.has_ground_truth(data.test) and data.train.styles is not None:
    results["ground_truth"] = _ground_truth(plugged, model, data, z_test, (f_ide, f_sty), held, latents,
                                            samples, translation_pairs, seed)
  timings["ground_truth"] = time.time() - t
  results["seconds"] = timings
  return results


def evaluate_run(run_dir: str, plugged=None, write: bool = True, **kwargs) -> dict:
  """Rebuilds a finished run from its directory, evaluates it and writes `<run_dir>/disentanglement.json`.

  plugged: the frozen network the run's FDEN was trained on, when it is not ALI (`plugin.load_saved`); an
  ALI run finds its ALI itself (its own, or the --ali_dir it recorded). kwargs go to `evaluate_models`.
  """
  run = runs.load_run(run_dir, plugged)
  data = datasets.load(run.config.data)
  z_test = plugin.encode_all(run.plugged, data.test.images)
  results = {"run_dir": os.path.abspath(run_dir),
             **evaluate_models(run.plugged, run.fden, data, run.config, latents={"test": z_test}, **kwargs)}
  if write:
    write_results(run_dir, results)
  return results


def write_results(run_dir: str, results: dict) -> str:
  """Writes results to `<run_dir>/disentanglement.json` atomically (temporary file, then rename)."""
  path = os.path.join(run_dir, RESULTS_FILE)
  files.write_json(path, results)
  return path
