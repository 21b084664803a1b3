"""tf.distribute: two replicas give the numbers of one device; two worker processes train as a cluster.

The CPU is split into two logical devices at import time (tests/conftest.py), so
`MirroredStrategy(["/cpu:0", "/cpu:1"])` runs two replicas here. The multi-worker test starts this file as a
script, once per worker (`_worker` at the bottom).

The 1e-5 comparisons hold on this machine. Two replicas sum in another order than one device, and a
LeakyReLU input within float noise of 0 can then take the other slope: ALI's step on the second batch of
these images moved one discriminator kernel by 1.6e-3 (one sample's gradient at a batch-norm output
differed by 70% while the forward pass agreed to 1e-6; a slope flip is the likely cause, not proven).
Other CPU kernels may need another seed or step.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from fden_tf import checkpoints
from fden_tf import config as config_lib
from fden_tf import distribute
from fden_tf import fden as fden_lib
from fden_tf import fewshot
from fden_tf import plugin
from fden_tf import train_ali
from fden_tf import train_fden
from fden_tf import training_loop
from fden_tf.data import datasets
from fden_tf.data import episodes

pytestmark = pytest.mark.distributed

ONE_DEVICE = None  # TensorFlow's default strategy: the code path of a run without tf.distribute


@pytest.fixture(scope="module")
def mirrored():
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _checkpoint_values(workdir):
  """Every tensor of the newest checkpoint under `workdir` (weights, batch-norm statistics, optimizer
  slots and counters), by name."""
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def adam_step_bound(beta_1, beta_2, t):
  """The largest |m_hat / sqrt(v_hat)| Adam's step t can take, whatever the gradients g_1..g_t.

  m_hat = sum_i w_i g_i and v_hat = sum_i u_i g_i^2 with w_i = (1 - b1) b1^(t-i) / (1 - b1^t) and
  u_i = (1 - b2) b2^(t-i) / (1 - b2^t); Cauchy-Schwarz gives |m_hat| <= sqrt(sum w_i^2 / u_i) sqrt(v_hat).
  (t = 1: exactly 1, a sign step.)"""
  i = np.arange(1, t + 1)
  w = (1 - beta_1) * beta_1 ** (t - i) / (1 - beta_1 ** t)
  u = (1 - beta_2) * beta_2 ** (t - i) / (1 - beta_2 ** t)
  return float(np.sqrt(np.sum(w ** 2 / u)))


def adam_divergence_bound(learning_rate, beta_1, beta_2, steps):
  """How far two Adam trainings of identical maths can end apart in one weight: round-off (a different
  reduction order across replicas or workers, or under load) flips the sign of a near-zero gradient, and
  Adam turns that into a full-size step the other way, so each step can differ by twice its bound."""
  return sum(2 * learning_rate * adam_step_bound(beta_1, beta_2, t) for t in range(1, steps + 1))


def _assert_same_values(values_a, values_b, atol=1e-5, bound=None, max_outlier_fraction=0.01):
  """values_b == values_a within atol, except that with `bound` (adam_divergence_bound) at most
  max_outlier_fraction of all elements may exceed atol, none of them beyond `bound`: the near-zero-gradient
  weights whose sign round-off decides. A real difference (a wrong gradient, a missed step) moves most
  weights, not a handful."""
  assert values_a.keys() == values_b.keys()
  if bound is None:
    worst = max(values_a,
                key=lambda k: np.max(np.abs(values_a[k].astype(np.float64) - values_b[k]), initial=0))
    np.testing.assert_allclose(values_b[worst], values_a[worst], rtol=0, atol=atol, err_msg=worst)
    return
  diffs = {k: np.abs(np.asarray(values_a[k], np.float64) - np.asarray(values_b[k], np.float64)).ravel()
           for k in values_a}
  total = sum(d.size for d in diffs.values())
  outliers = sum(int(np.sum(d > atol)) for d in diffs.values())
  assert outliers <= max_outlier_fraction * total, f"{outliers} of {total} values differ by more than {atol}"
  worst = max(diffs, key=lambda k: np.max(diffs[k], initial=0))
  assert np.max(diffs[worst], initial=0) <= bound, (worst, float(np.max(diffs[worst])), bound)


def _logged_step(workdir, step):
  """The metrics logged after `step` (train_log.jsonl; a skipped step logs only an event)."""
  return next(r for r in training_loop.read_log(os.path.join(workdir, "train_log.jsonl"))
              if r.get("step") == step and "event" not in r)


def _replicas_in_sync(model):
  """Every mirrored variable holds the same value on both replicas (batch-norm statistics included)."""
  for v in model.variables:
    copies = [c.numpy() for c in v.value.values]
    for c in copies[1:]:
      np.testing.assert_array_equal(c, copies[0], err_msg=v.path)


def _projection():
  """A frozen stand-in for ALI: a fixed random projection of the pixels to 32 dimensions (and back)."""
  projection = np.random.default_rng(0).standard_normal((32 * 32, 32)).astype(np.float32) / 32
  inverse = np.linalg.pinv(projection).astype(np.float32)
  return plugin.FrozenAutoencoder(
      lambda x: tf.reshape(x, [-1, 32 * 32]) @ projection,
      lambda z: tf.reshape(tf.clip_by_value(z @ inverse, 0.0, 1.0), [-1, 32, 32, 1]), name="projection")


def _glyph_codes(config):
  """glyphs (smoke size) and their codes under `_projection`, train and test."""
  data = datasets.load(config.data)
  plugged = _projection()
  return data, plugin.encode_all(plugged, data.train.images), plugin.encode_all(plugged, data.test.images)


class _CheckpointAt(training_loop.NoHooks):
  """Keeps every tensor of the checkpoint written after `step`."""

  def __init__(self, workdir, step):
    self.workdir, self.step, self.values = workdir, step, None

  def on_checkpoint(self, stage_name, step):
    if step == self.step:
      self.values = _checkpoint_values(self.workdir)


@pytest.fixture(scope="module")
def fden_runs(mirrored, tmp_path_factory):
  """FDEN on glyphs (smoke sizes, codes of `_projection`), 100 steps on one device and on two replicas
  from the same initial weights, dropout off. Step 1 is applied; step 2 is made non-finite, so the
  divergence guard skips it; the checkpoint written after step 2 is kept for the one-step comparison.

  The paper's learning rate (FDENConfig's default, 1e-4): a bias just before a batch norm has a zero
  gradient in exact arithmetic, and Adam's first step divides its float noise (~1e-7) by |g| + 3e-6, so
  at the smoke preset's 1e-3 such biases move by noise-sized amounts of up to ~3e-5, differently on each
  side (measured), which a 1e-5 comparison cannot tell from a bug.
  """
  config = config_lib.smoke()
  data, z_train, z_test = _glyph_codes(config)
  c = dataclasses.replace(config.fden, steps=100, checkpoint_every=2, learning_rate=1e-4, dropout=0.0)
  test_episodes = episodes.EpisodeSampler(data.test.labels, c.way, c.shot, c.query)
  runs = {}
  for name, strategy in (("one", ONE_DEVICE), ("two", mirrored)):
    workdir = tmp_path_factory.mktemp("fden") / name
    keras.utils.set_random_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
      model = fden_lib.FDEN.from_config_section(z_train.shape[1], c)
    hook = _CheckpointAt(str(workdir), 2)
    final = train_fden.train(model, c, z_train, data.train.labels, str(workdir), show_progress=False,
                             log_every=1, nonfinite_steps=[1], hooks=hook, strategy=strategy)
    f_ide = train_fden.factorise(model, z_test)[0]
    runs[name] = dict(workdir=workdir, model=model, final=final, after_two_steps=hook.values,
                      first=_logged_step(workdir, 1), fewshot=fewshot.evaluate(f_ide, test_episodes, 200, 1))
  runs["fden_config"] = c
  return runs


def test_one_fden_step_on_two_replicas_matches_one_device(fden_runs):
  one, two = fden_runs["one"], fden_runs["two"]
  # Same global batch of 8 episodes (4 per replica), same step: same weights, batch-norm statistics and
  # Adam state within 1e-5, and the same losses.
  c = fden_runs["fden_config"]
  _assert_same_values(one["after_two_steps"], two["after_two_steps"],
                      bound=adam_divergence_bound(c.learning_rate, c.beta_1, c.beta_2, steps=1))
  for key in ("l_r", "l_c", "l_m", "loss", "accuracy", "grad_norm_u", "grad_norm_m", "clip_fraction"):
    assert two["first"][key] == pytest.approx(one["first"][key], rel=1e-4, abs=1e-6), key
  # The poisoned step 2 was skipped on both replicas: nothing applied, one Adam iteration in all.
  assert two["after_two_steps"]["optimizer/variables_in_order/0/.ATTRIBUTES/VARIABLE_VALUE"] == 1
  assert one["final"]["skipped_steps"] == two["final"]["skipped_steps"] == 1
  _replicas_in_sync(two["model"])


def test_short_fden_training_on_two_replicas_reaches_the_one_device_accuracy_band(fden_runs):
  one, two = fden_runs["one"], fden_runs["two"]
  chance = 1.0 / one["fewshot"]["way"]
  assert one["fewshot"]["accuracy"] > 1.5 * chance and two["fewshot"]["accuracy"] > 1.5 * chance
  assert abs(one["fewshot"]["accuracy"] - two["fewshot"]["accuracy"]) <= \
      one["fewshot"]["ci95"] + two["fewshot"]["ci95"], (one["fewshot"], two["fewshot"])
  # 100 steps later the two trainings still track each other.
  for key in ("loss", "l_r", "l_c", "l_m"):
    assert two["final"][key] == pytest.approx(one["final"][key], rel=0.02, abs=1e-3), key


def test_a_one_device_checkpoint_restores_on_both_replicas(fden_runs):
  """What resuming on other hardware does: a one-device checkpoint into the two-replica model."""
  model = fden_runs["two"]["model"]
  checkpoints.restore(checkpoints.checkpoint(fden=model), tf.train.latest_checkpoint(
      str(fden_runs["one"]["workdir"] / "checkpoints")), partial=True)
  _replicas_in_sync(model)
  expected = _checkpoint_values(fden_runs["one"]["workdir"])
  for i, v in enumerate(model.variables):
    np.testing.assert_array_equal(v.numpy(),
                                  expected[f"fden/variables_in_order/{i}/.ATTRIBUTES/VARIABLE_VALUE"])


def _ali_two_steps(strategy, workdir, images):
  """ALI (smoke sizes) for one applied step and one skipped (non-finite) step, dropout off."""
  strategy = strategy or tf.distribute.get_strategy()
  c = dataclasses.replace(config_lib.smoke().ali, steps=2, checkpoint_every=2, batch_size=16)
  keras.utils.set_random_seed(0)
  with strategy.scope():
    ali = train_ali.build_ali(c, images.shape[1:], images)
  for layer in ali._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.Dropout):
      layer.rate = 0.0  # ALI's discriminator dropout; its masks depend on each replica's batch shape
  metrics = train_ali.train(ali, c, images, str(workdir), show_progress=False, log_every=1,
                            nonfinite_steps=[1], strategy=strategy)
  return ali, metrics


def test_one_ali_step_on_two_replicas_matches_one_device(mirrored, tmp_path):
  images = np.random.default_rng(0).uniform(size=(64, 32, 32, 1)).astype(np.float32)
  _, one_run = _ali_two_steps(ONE_DEVICE, tmp_path / "one", images)
  ali, two_run = _ali_two_steps(mirrored, tmp_path / "two", images)
  # Batch norm takes the global batch's statistics on both replicas (synchronized), so 8 + 8 images
  # normalise as 16 do.
  _assert_same_values(_checkpoint_values(tmp_path / "one"), _checkpoint_values(tmp_path / "two"))
  one, two = _logged_step(tmp_path / "one", 1), _logged_step(tmp_path / "two", 1)
  for key in ("d_loss", "g_loss", "reconstruction", "d_real", "d_fake"):
    assert two[key] == pytest.approx(one[key], rel=1e-5), key
  assert one_run["skipped_steps"] == two_run["skipped_steps"] == 1
  _replicas_in_sync(ali)


def test_strategy_names_and_global_batch_checks(mirrored, monkeypatch):
  assert distribute.get_strategy("auto") is tf.distribute.get_strategy()  # no GPU here: one device
  assert isinstance(distribute.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
  assert distribute.get_strategy(mirrored) is mirrored
  with pytest.raises(ValueError, match="unknown strategy 'tpu'"):
    distribute.get_strategy("tpu")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="needs TF_CONFIG"):
    distribute.get_strategy("multiworker")
  with pytest.raises(ValueError, match="episodes_per_batch 5 does not split evenly over 2 replicas"):
    distribute.check_divisible(mirrored, 5, "episodes_per_batch")
  distribute.check_divisible(mirrored, 16, "episodes_per_batch")


# --- Two worker processes on localhost: MultiWorkerMirroredStrategy. -------------------------------------

WORKER_CONFIG = dict(fden={"steps": 3, "checkpoint_every": 3, "episodes_per_batch": 4, "learning_rate": 1e-4,
                           "eval_episodes": 50},
                     log_every=1, metrics_samples=100, metrics_mine_steps=5, metrics_translation_pairs=5)


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_train_and_the_chiefs_checkpoint_restores_on_one_device(tmp_path):
  out, scratch = tmp_path / "run", tmp_path / "scratch"
  scratch.mkdir()
  cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
  procs = []
  try:
    for index in range(2):
      env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(scratch),
                 TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
      procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), str(out)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=300) for proc in procs]
  finally:
    for proc in procs:  # both always end, whatever happened
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  # Both workers' ends: the first one to fail is often only reporting the other's failure.
  assert all(proc.returncode == 0 for proc in procs), "\n".join(
      f"worker {i} exit {proc.returncode}:\n{stderr[-2500:]}" for i, (proc, (_, stderr))
      in enumerate(zip(procs, outputs)))
  reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
  chief, worker = reports
  assert chief["chief"] and not worker["chief"] and chief["replicas"] == worker["replicas"] == 2
  assert chief["fden_train"] == worker["fden_train"], "the workers' global losses must agree"
  # Only the chief wrote the record; the other worker's scratch copies are gone.
  assert "fewshot" in json.loads((out / "metrics.json").read_text())
  assert (out / "fden" / "checkpoints" / "ckpt-3.index").exists()
  assert not list(scratch.glob("fden-*"))

  # The chief's checkpoint restores into a one-device FDEN, and holds what one device computes on the
  # same global batches.
  config = config_lib.smoke().replace(**WORKER_CONFIG)
  data, z_train, _ = _glyph_codes(config)
  restored = fden_lib.FDEN.from_config_section(z_train.shape[1], config.fden)
  train_fden.restore_trained(restored, str(out / "fden"))
  keras.utils.set_random_seed(config.seed)
  one = fden_lib.FDEN.from_config_section(z_train.shape[1], config.fden)
  train_fden.train(one, config.fden, z_train, data.train.labels, str(tmp_path / "one"), seed=config.seed,
                   show_progress=False)
  # Same maths, other reduction order: weights within 1e-5 but for the few near-zero-gradient ones Adam's
  # sign steps may flip (adam_divergence_bound), and the same factors of held-out codes.
  c = config.fden
  _assert_same_values({v.path: v.numpy() for v in one.variables},
                      {v.path: r.numpy() for v, r in zip(one.variables, restored.variables)},
                      bound=adam_divergence_bound(c.learning_rate, c.beta_1, c.beta_2, c.steps))
  held = z_train[:64]
  for got, want in zip(train_fden.factorise(restored, held)[:2], train_fden.factorise(one, held)[:2]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-4)


def _worker(out):
  """One worker of the multi-worker test: the strategy first (before TensorFlow runs anything), then the
  pipeline's FDEN stage on glyphs with `_projection` plugged in. The chief's t-SNE, projector and
  disentanglement metrics are stubbed out: tested elsewhere, they would take a minute here."""
  strategy = distribute.get_strategy("multiworker")
  from fden_tf import pipeline  # pylint: disable=g-import-not-at-top
  no_op = lambda *args, **kwargs: None
  pipeline._figures = pipeline.write_projector = no_op  # pylint: disable=protected-access
  pipeline.metrics_lib.evaluate_models = lambda *args, **kwargs: {}
  pipeline.metrics_lib.write_results = lambda *args, **kwargs: None
  config = config_lib.smoke().replace(**WORKER_CONFIG)
  metrics = pipeline.train_and_evaluate(config, out, stage="fden", plugged=_projection(),
                                        show_progress=False, export=False, strategy=strategy)
  print(json.dumps({"chief": distribute.is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
                    "fden_train": {k: v for k, v in metrics["fden_train"].items()
                                   if k not in ("seconds", "steps_per_second")}}), flush=True)
  sys.stderr.flush()
  # Skip TensorFlow's coordination-service shutdown: a worker would otherwise wait at exit for the other
  # one (tens of seconds); everything worth keeping is written and reported.
  os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
  _worker(sys.argv[1])
