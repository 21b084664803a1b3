"""The levers beyond the paper (issue "Both halves of the paper from one model") in small runs with known
answers: ALI's instance noise, and FDEN's within-class identity swap on synthetic codes whose identity and
style parts are known, so translation can be scored against the truth in latent space."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import losses
from fden_tf import train_ali
from fden_tf import train_fden
from fden_tf import training_loop


def test_instance_noise_has_its_own_draws_and_leaves_the_others_unchanged():
  images = np.random.default_rng(0).uniform(size=(40, 8, 8, 1)).astype(np.float32)
  plain = config_lib.ALIConfig(batch_size=8, latent_dim=4)
  noisy = dataclasses.replace(plain, instance_noise=0.2)
  step = tf.constant(3, tf.int64)
  a = train_ali.replica_inputs_fn(images, plain, 4, seed=5)(step, 0, 1)
  b = train_ali.replica_inputs_fn(images, noisy, 4, seed=5)(step, 0, 1)
  assert set(a) == {"x", "eps", "z_prior"} and set(b) == set(a) | {"noise_real", "noise_fake"}
  for key in a:  # a run with noise sees the same batch, posterior noise and prior draws
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
  real, fake = b["noise_real"].numpy(), b["noise_fake"].numpy()
  assert real.shape == fake.shape == (8, 8, 8, 1) and not np.allclose(real, fake)
  assert abs(real.std() - 0.2) < 0.03 and abs(real.mean()) < 0.03  # at its level, added in the step
  again = train_ali.replica_inputs_fn(images, noisy, 4, seed=5)(step, 0, 1)
  np.testing.assert_array_equal(again["noise_real"].numpy(), real)  # a function of (seed, step): resumable
  halves = [train_ali.replica_inputs_fn(images, noisy, 4, seed=5)(step, r, 2)["noise_fake"] for r in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), fake)  # replicas share the one-device draws


def test_instance_noise_decays_on_a_straight_line_to_its_final_level():
  images = np.zeros((40, 8, 8, 1), np.float32)
  constant = config_lib.ALIConfig(batch_size=8, latent_dim=4, steps=100, instance_noise=0.5)
  decaying = dataclasses.replace(constant, instance_noise_final=0.1)
  draw = lambda config, step: train_ali.replica_inputs_fn(images, config, 4, seed=5)(
      tf.constant(step, tf.int64), 0, 1)["noise_real"].numpy()
  for step, level in ((0, 0.5), (50, 0.3), (100, 0.1), (150, 0.1)):  # held at the final level past `steps`
    assert train_ali.instance_noise_level(decaying, tf.constant(step, tf.int64)).numpy() == pytest.approx(level)
    # The same unit draws as the constant noise, scaled by the step's level instead of 0.5.
    np.testing.assert_allclose(draw(decaying, step), draw(constant, step) * level / 0.5, rtol=1e-5, atol=1e-7)
  assert train_ali.instance_noise_level(constant, tf.constant(70, tf.int64)) == 0.5  # None: constant


def test_mirror_flips_about_half_the_batch_and_leaves_the_other_draws_unchanged():
  images = np.random.default_rng(0).uniform(size=(40, 8, 8, 3)).astype(np.float32)
  plain = config_lib.ALIConfig(batch_size=16, latent_dim=4)
  mirrored = dataclasses.replace(plain, mirror=True)
  draw = lambda config, step, replica=0, replicas=1: train_ali.replica_inputs_fn(images, config, 4, seed=5)(
      tf.constant(step, tf.int64), replica, replicas)

  def flipped_rows(step):
    x, y = draw(plain, step)["x"].numpy(), draw(mirrored, step)["x"].numpy()
    same, flipped = np.all(y == x, axis=(1, 2, 3)), np.all(y == x[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ flipped)  # each image as it was or mirrored left-right, never anything else
    return flipped

  a, b = draw(plain, 3), draw(mirrored, 3)
  assert set(b) == set(a) and b["x"].shape.as_list() == a["x"].shape.as_list()  # the step traces alike
  for key in ("eps", "z_prior"):
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
  assert 3 <= flipped_rows(3).sum() <= 13  # about half of 16
  assert not np.array_equal(flipped_rows(3), flipped_rows(4))  # redrawn at every step
  np.testing.assert_array_equal(draw(mirrored, 3)["x"].numpy(), b["x"].numpy())  # from (seed, step): resumable
  halves = [draw(mirrored, 3, r, 2)["x"] for r in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), b["x"].numpy())  # replicas share the one-device draws


def _synthetic_codes(rng, classes, per_class, rotation):
  """z = rotation [identity(class); style(sample)]: 4 identity and 4 style coordinates, mixed."""
  centres = rng.normal(size=(classes, 4)) * 2.0
  labels = np.repeat(np.arange(classes), per_class)
  styles = rng.normal(size=(len(labels), 4))
  return (np.concatenate([centres[labels], styles], 1) @ rotation.T).astype(np.float32), labels, centres, styles


def _translation_errors(model, rotation, centres, labels, styles, rng, pairs=400):
  """Translating sample A into sample B's style, E(f_ide^A, f_sty^B), against the true code of (A's identity,
  B's style), part by part in the unmixed coordinates: (identity part error, style part error), each mean
  squared error over pairs divided by the spread of that part (0 = perfect; 1 = a class-blind guess)."""
  a, b = rng.integers(len(labels), size=pairs), rng.integers(len(labels), size=pairs)
  a, b = a[labels[a] != labels[b]], b[labels[a] != labels[b]]
  z = (np.concatenate([centres[labels], styles], 1) @ rotation.T).astype(np.float32)
  f_ide, _ = model.disentangle(tf.constant(z[a]))
  _, f_sty = model.disentangle(tf.constant(z[b]))
  got = model.entangle(f_ide, f_sty).numpy() @ rotation  # back to [identity; style] coordinates
  error = lambda part, truth: float(np.mean(np.sum((part - truth) ** 2, 1)) / np.mean(np.sum(
      (truth - truth.mean(0)) ** 2, 1)))
  return error(got[:, :4], centres[labels[a]]), error(got[:, 4:], styles[b])


def _train(tmp_path, z_train, labels, **levers):
  c = dataclasses.replace(config_lib.smoke().fden, steps=800, hidden_scale=1.0, checkpoint_every=10_000,
                          **levers)
  keras.utils.set_random_seed(0)
  model = fden_lib.FDEN.from_config_section(z_train.shape[1], c)
  metrics = train_fden.train(model, c, z_train, labels, str(tmp_path / str(sorted(levers.items()))),
                             show_progress=False)
  return model, metrics


def test_identity_swap_with_a_style_bottleneck_translates_codes_with_known_parts(tmp_path):
  """Codes z = Q [identity; style] (Q a random rotation, 4 + 4 coordinates), 60 training classes, scored on
  20 unseen ones. With the paper's losses alone the translated code takes its style from A, or from
  nowhere; with the identity swap and the style bottleneck it takes the identity from A and the style from
  B."""
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  z_train, labels, _, _ = _synthetic_codes(rng, 60, 10, rotation)
  _, test_labels, test_centres, test_styles = _synthetic_codes(rng, 20, 10, rotation)
  score = lambda model: _translation_errors(model, rotation, test_centres, test_labels, test_styles,
                                            np.random.default_rng(1))
  paper, _ = _train(tmp_path, z_train, labels)
  levers, metrics = _train(tmp_path, z_train, labels, identity_swap_weight=1.0, style_bottleneck_weight=0.03)
  assert {"l_identity_swap", "l_style_rate"} <= set(metrics)
  # Measured: paper (0.91, 0.56): the identity comes mostly from B; levers (0.09, 0.21).
  (paper_identity, paper_style), (identity, style) = score(paper), score(levers)
  assert identity < 0.3 and identity < 0.5 * paper_identity, (paper_identity, identity)  # A's identity stays
  # and B's style arrives. Absolute bound only: the paper's losses' own style error moves with round-off
  # (0.56 on the AMD EPYC VMs, 0.16 on the 2026-12-04 Intel Xeon VM, where the levers gave 0.17).
  assert style < 0.35, (paper_style, style)


def test_neutral_style_decodes_an_unseen_identity_to_its_class_code(tmp_path):
  """FDENConfig.neutral_style_weight on codes with known parts (as above): E(f_ide^A, 0), A's identity with
  the neutral style, is the code of A's class in its average style, Q [centre; 0], on 20 unseen classes,
  and A's own style stays out of it; trained alike without the term (the same style bottleneck), a style of
  0 means nothing in particular to the Entangler. (With the identity swap as well, the swap alone already
  decodes E(f_ide^A, 0) near the class code on such linear codes: 0.10 / 0.04 without the term.)"""
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  z_train, labels, _, _ = _synthetic_codes(rng, 60, 10, rotation)
  z_test, test_labels, centres, styles = _synthetic_codes(rng, 20, 10, rotation)

  def neutral_errors(model):
    """(distance of E(f_ide^A, 0) from A's class code, share of A's own style in it), in the unmixed
    coordinates, each over the spread of the codes' identity / style part."""
    f_ide, f_sty = model.disentangle(tf.constant(z_test))
    got = model.entangle(f_ide, tf.zeros_like(f_sty)).numpy() @ rotation
    identity = np.mean(np.sum((got[:, :4] - centres[test_labels]) ** 2, 1)) / np.mean(
        np.sum((centres - centres.mean(0)) ** 2, 1))
    style = np.mean(np.sum(got[:, 4:] ** 2, 1)) / np.mean(np.sum(styles ** 2, 1))
    return float(identity), float(style)

  levers = dict(style_bottleneck_weight=0.03)
  without, _ = _train(tmp_path, z_train, labels, **levers)
  model, metrics = _train(tmp_path, z_train, labels, neutral_style_weight=1.0, **levers)
  assert "l_neutral_style" in metrics
  (identity_without, style_without), (identity, style) = neutral_errors(without), neutral_errors(model)
  assert identity < 0.2, (identity_without, identity)  # A's class, from A's f_ide alone
  assert style < 0.5 * style_without and style < 0.2, (style_without, style)  # in no particular style
  # Measured: without the term (0.12, 0.35), with it (0.14, 0.06).


def test_clean_decoding_trains_the_entangler_alone(tmp_path):
  """FDENConfig.clean_decoding_weight: Eq. 3 on the noiseless factors with their gradient stopped. As the
  only term (alpha = beta = gamma = 0) it moves the Entangler's weights and none of the Disentangler's
  or F_mi's, and its value falls."""
  rng = np.random.default_rng(0)
  z_train, labels, _, _ = _synthetic_codes(rng, 20, 6, np.linalg.qr(rng.normal(size=(8, 8)))[0])
  c = dataclasses.replace(config_lib.smoke().fden, steps=60, alpha=0.0, beta=0.0, gamma=0.0,
                          style_dim=3, style_bottleneck_weight=0.0, clean_decoding_weight=1.0,
                          checkpoint_every=10_000)
  keras.utils.set_random_seed(0)
  model = fden_lib.FDEN.from_config_section(8, c)
  before = [v.numpy().copy() for v in model.trainable_variables]
  first = float(np.mean(np.sum((z_train - model(tf.constant(z_train))[2].numpy()) ** 2, 1)))
  metrics = train_fden.train(model, c, z_train, labels, str(tmp_path / "fden"), show_progress=False,
                             log_every=20)
  moved = {id(v): not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)}
  assert all(moved[id(v)] for v in model.entangler.trainable_variables if "kernel" in v.name)
  others = model.disentangler.trainable_variables + model.statistician.trainable_variables
  assert not any(moved[id(v)] for v in others)
  assert metrics["l_clean_decoding"] < first


def _refit_config(steps, refit_steps):
  return dataclasses.replace(config_lib.smoke().fden, steps=steps, style_dim=3, style_bottleneck_weight=0.1,
                             entangler_refit_steps=refit_steps, entangler_refit_batch_size=64,
                             checkpoint_every=steps)


def test_entangler_refit_moves_only_the_entangler_and_brings_z_tilde_to_z(tmp_path):
  """FDENConfig.entangler_refit_steps: after the episodic steps, the Entangler alone is fit to Eq. 3 on the
  noiseless factors. Against the same run without the refit, the Disentangler and F_mi (their batch norm's
  statistics too) end the same, so f_ide and f_sty do; every Entangler kernel moved, and ||z - z~||^2 on
  the training codes fell."""
  rng = np.random.default_rng(0)
  z_train, labels, _, _ = _synthetic_codes(rng, 20, 6, np.linalg.qr(rng.normal(size=(8, 8)))[0])

  def train(refit_steps):
    c = _refit_config(steps=100, refit_steps=refit_steps)
    keras.utils.set_random_seed(0)
    model = fden_lib.FDEN.from_config_section(8, c)
    workdir = str(tmp_path / str(refit_steps))
    metrics = train_fden.train(model, c, z_train, labels, workdir, show_progress=False, log_every=100)
    return model, metrics, training_loop.read_log(os.path.join(workdir, "train_log.jsonl"))

  episodic, _, _ = train(0)
  model, metrics, log = train(600)
  c_lr = _refit_config(steps=100, refit_steps=600).learning_rate
  assert "l_r_refit" in metrics and "l_c" not in metrics  # the last window is the refit's
  assert [("l_c" in r, "l_r_refit" in r) for r in log] == [(True, False)] + [(False, True)] * 6
  # The refit's own rate is logged, decaying linearly: refit step i runs at (1 - i / 600) of the first's.
  refit_rates = [r["refit_optimizer_learning_rate"] for r in log[1:]]
  np.testing.assert_allclose(refit_rates, [c_lr * (1 - i / 600) for i in (99, 199, 299, 399, 499, 599)],
                             rtol=1e-4)
  frozen = lambda m: m.disentangler.variables + m.statistician.variables
  for a, b in zip(frozen(episodic), frozen(model)):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
  for a, b in zip(episodic.entangler.variables, model.entangler.variables):
    if "kernel" in a.name:
      assert not np.allclose(a.numpy(), b.numpy()), a.name
  error = lambda m: float(np.mean(np.sum((z_train - m(tf.constant(z_train))[2].numpy()) ** 2, 1)))
  # Measured: 19.4 -> 9.1 (||z||^2 is 19.9: 100 episodic steps leave z~ far from z).
  assert error(model) < 0.7 * error(episodic), (error(episodic), error(model))


class _Killed(Exception):
  pass


class _KillAfterCheckpoint(training_loop.NoHooks):
  """Stops training right after the checkpoint of step `step`, as a kill there would."""

  def __init__(self, step):
    self.step = step

  def on_checkpoint(self, stage_name, step):
    if step == self.step:
      raise _Killed()


def _assert_a_killed_run_resumes_to_the_same_weights(tmp_path, c, kill_after, **train_kwargs):
  """Trains FDEN (config section `c`) on the same synthetic codes straight through in tmp_path/a, and in
  tmp_path/b killed right after the checkpoint of step `kill_after` and re-run; both must end with the same
  weights."""
  rng = np.random.default_rng(0)
  z_train, labels, _, _ = _synthetic_codes(rng, 20, 6, np.linalg.qr(rng.normal(size=(8, 8)))[0])

  def run(workdir, hooks=None):
    keras.utils.set_random_seed(0)
    model = fden_lib.FDEN.from_config_section(8, c)
    train_fden.train(model, c, z_train, labels, str(workdir), show_progress=False, hooks=hooks,
                     **train_kwargs)
    return model

  straight = run(tmp_path / "a")
  with pytest.raises(_Killed):
    run(tmp_path / "b", _KillAfterCheckpoint(kill_after))
  resumed = run(tmp_path / "b")
  for a, b in zip(straight.variables, resumed.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_entangler_refit_resumes_where_it_stopped(tmp_path):
  """A run killed inside the refit and re-run ends with the weights of an uninterrupted one: the refit's
  batches are a function of (seed, step), its optimizer (with its decaying learning rate) is checkpointed."""
  c = dataclasses.replace(_refit_config(50, 100), checkpoint_every=30)
  _assert_a_killed_run_resumes_to_the_same_weights(tmp_path, c, kill_after=90)  # 40 steps into the refit


def test_cosine_schedule_decays_the_episodic_rate_and_resumes_where_it_stopped(tmp_path):
  """FDENConfig.learning_rate_schedule = "cosine": the rate logged after step t is learning_rate times
  (1 + cos(pi (t - 1) / steps)) / 2, the rate its last step ran at; a run killed mid-way and re-run ends
  with the weights of an uninterrupted one (the rate is checkpointed with the optimizer)."""
  c = dataclasses.replace(config_lib.smoke().fden, steps=60, checkpoint_every=20,
                          learning_rate_schedule="cosine")
  _assert_a_killed_run_resumes_to_the_same_weights(tmp_path, c, kill_after=40, log_every=10)
  logged = {r["step"]: r["learning_rate"] for r in training_loop.read_log(
      str(tmp_path / "a" / "train_log.jsonl")) if "learning_rate" in r}
  for step in (10, 30, 50, 60):
    expected = c.learning_rate * (1 + np.cos(np.pi * (step - 1) / 60)) / 2
    assert logged[step] == pytest.approx(expected, rel=1e-4), (step, logged[step], expected)
  assert logged[60] < 0.01 * c.learning_rate


def test_identity_invariance_takes_the_style_out_of_f_ide_on_unseen_classes(tmp_path):
  """FDENConfig.identity_invariance_weight on codes with known parts (4 identity + 4 style coordinates,
  mixed by a rotation): f_ide's within-class share of its scatter on 20 unseen classes falls against the
  paper's losses trained alike."""
  rng = np.random.default_rng(0)
  rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  # Classes closer together than _synthetic_codes's (spread 0.7 against the style's 1), so that the episodic
  # loss alone leaves style in f_ide.
  weak = lambda classes: _synthetic_codes(rng, classes, 10, rotation @ np.diag([0.35] * 4 + [1.0] * 4))
  (z_train, labels, _, _), (z_test, test_labels, _, _) = weak(60), weak(20)

  def fisher_ratio(weight):
    c = dataclasses.replace(config_lib.smoke().fden, steps=200, checkpoint_every=10_000,
                            identity_invariance_weight=weight)
    keras.utils.set_random_seed(0)
    model = fden_lib.FDEN.from_config_section(8, c)
    metrics = train_fden.train(model, c, z_train, labels, str(tmp_path / str(weight)), show_progress=False)
    assert ("l_identity_invariance" in metrics) == bool(weight)
    f_ide = train_fden.factorise(model, z_test)[0]
    grouped = np.stack([f_ide[test_labels == k] for k in range(20)])[None]  # [1, 20 classes, 10, D]
    return float(losses.identity_invariance_loss(tf.constant(grouped)))

  paper, invariant = fisher_ratio(0.0), fisher_ratio(10.0)
  assert invariant < 0.7 * paper, (paper, invariant)  # measured: 0.0120 -> 0.0053
