"""Disentanglement metrics (fden_tf/metrics) on synthetic inputs with known answers."""

import json
import os

import numpy as np
import pytest
from sklearn import metrics as sk_metrics
import tensorflow as tf

from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import losses
from fden_tf import plugin
from fden_tf import runs
from fden_tf.data import glyphs
from fden_tf.metrics import alignment
from fden_tf.metrics import evaluate as evaluate_lib
from fden_tf.metrics import fidelity
from fden_tf.metrics import ground_truth
from fden_tf.metrics import independence
from fden_tf.metrics import mixing
from fden_tf.metrics import report


def _labels(classes=20, per_class=6):
  return np.repeat(np.arange(classes, dtype=np.int32), per_class)


def _gaussians(rho, n, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 1))
  y = rho * x + np.sqrt(1 - rho * rho) * rng.standard_normal((n, 1))
  return x.astype(np.float32), y.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Alignment
# ------------------------------------------------------------------------------------------------


def test_alignment_identity_representation_scores_high_and_constant_scores_chance():
  labels = _labels()
  rng = np.random.default_rng(0)
  identity = np.eye(20, dtype=np.float32)[labels] + 0.01 * rng.standard_normal((len(labels), 20))
  constant = np.ones((len(labels), 8), np.float32)
  out = alignment.fewshot_alignment({"identity": identity, "constant": constant}, labels, way=5, shot=1,
                                    query=1, num_episodes=200, seed=3)
  assert out["identity"]["accuracy"] == pytest.approx(1.0)
  # Equal distances to every prototype: the first class always wins, so exactly one query in C is right.
  assert out["constant"]["accuracy"] == pytest.approx(out["chance"]) == pytest.approx(0.2)
  assert out["episodes"] == 200 and out["way"] == 5


# ------------------------------------------------------------------------------------------------
# Independence
# ------------------------------------------------------------------------------------------------


def test_fresh_statistician_near_zero_for_independent_and_analytic_for_correlated_gaussians():
  x, _ = _gaussians(0.0, 8000, seed=1)
  _, y = _gaussians(0.0, 8000, seed=2)
  assert abs(independence.dv_mutual_information(x, y, steps=600, seed=0)) < 0.06
  x, y = _gaussians(0.8, 8000, seed=3)
  truth = losses.analytic_gaussian_mi(0.8)  # -0.5 ln(1 - 0.64) = 0.511 nats
  assert independence.dv_mutual_information(x, y, steps=600, seed=0) == pytest.approx(truth, abs=0.12)


def test_distance_correlation_zero_ish_for_independent_and_high_for_dependent():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((600, 32)), rng.standard_normal((600, 32))
  assert abs(independence.distance_correlation(a, b)) < 0.02  # bias-corrected: ~0 even in 32-d
  rotation, _ = np.linalg.qr(rng.standard_normal((32, 32)))
  assert independence.distance_correlation(a, 3.0 * a @ rotation) == pytest.approx(1.0)
  x = rng.uniform(-1, 1, (600, 1))
  assert independence.distance_correlation(x, x * x) > 0.2  # uncorrelated, yet dependent
  assert independence.distance_correlation(a, np.ones((600, 3))) == 0.0


def test_split_halves_and_standardise():
  z = np.arange(12, dtype=np.float32).reshape(2, 6)
  left, right = independence.split_halves(z)
  np.testing.assert_array_equal(left, z[:, :3])
  np.testing.assert_array_equal(right, z[:, 3:])
  s = independence.standardise(np.array([[1.0, 5.0], [3.0, 5.0]]))
  np.testing.assert_allclose(s, [[-1.0, 0.0], [1.0, 0.0]])


# ------------------------------------------------------------------------------------------------
# Fidelity
# ------------------------------------------------------------------------------------------------


def test_latent_fidelity_known_answers():
  z = np.random.default_rng(0).standard_normal((100, 8)) + 2.0
  assert latent(z, z) == (0.0, 0.0)
  assert latent(z, np.zeros_like(z))[0] == pytest.approx(1.0)
  assert latent(z, np.broadcast_to(z.mean(0), z.shape))[1] == pytest.approx(1.0)


def latent(z, z_tilde):
  out = fidelity.latent_fidelity(z, z_tilde)
  return out["relative_error"], out["unexplained_variance"]


def test_pixel_fidelity_known_answers():
  x = np.zeros((4, 8, 8, 1), np.float32)
  out = fidelity.pixel_fidelity(x, from_z=x + 0.1, from_z_tilde=x + 0.3)
  assert out["reconstruction"] == pytest.approx(0.01)
  assert out["z_tilde_vs_z"] == pytest.approx(0.04)
  assert out["z_tilde_vs_image"] == pytest.approx(0.09)


class _HalvesFDEN:
  """A known factorization: f_ide is z's first `ide` coordinates, f_sty the rest; the Entangler puts them
  back (or, with ignore_style, puts zeros where the style was)."""

  def __init__(self, ide, ignore_style=False):
    self.ide, self.ignore_style = ide, ignore_style

  def disentangle(self, z):
    return z[:, :self.ide], z[:, self.ide:]

  def entangle(self, f_ide, f_sty):
    return tf.concat([f_ide, tf.zeros_like(f_sty) if self.ignore_style else f_sty], axis=1)


def test_factor_mixing_shares_are_each_factors_part_of_the_pairs_difference():
  # z = [identity (3 coordinates, set by the class) | style (5 coordinates, per sample)], G = identity map:
  # mixing B's style into A changes exactly B's style minus A's, so the style share is the style
  # coordinates' part of ||z_B - z_A||^2, and the identity share the rest; an Entangler that drops f_sty
  # gives a style share of 0 whatever f_sty holds.
  rng = np.random.default_rng(0)
  labels = _labels(classes=10, per_class=8)
  z = np.concatenate([3.0 * rng.standard_normal((10, 3))[labels], rng.standard_normal((80, 5))], 1)
  z = z.astype(np.float32)
  plugged = plugin.FrozenAutoencoder(lambda x: x, lambda c: c)
  out = mixing.factor_mixing(plugged, _HalvesFDEN(3), z, labels, pairs=400, seed=1)
  a, b = ground_truth.translation_pairs(labels, 400, 1)
  d = np.square(z[b] - z[a])
  expected_style = d[:, 3:].sum() / d.sum()
  for space in ("latent", "pixels"):
    assert out[space]["style_share"] == pytest.approx(expected_style, rel=1e-5)
    assert out[space]["identity_share"] == pytest.approx(1 - expected_style, rel=1e-5)
  assert 0.1 < expected_style < 0.5  # both factors carry part of the difference
  empty = mixing.factor_mixing(plugged, _HalvesFDEN(3, ignore_style=True), z, labels, pairs=400, seed=1)
  assert empty["latent"]["style_share"] == 0.0 and empty["pixels"]["style_share"] == 0.0
  assert empty["latent"]["identity_share"] == pytest.approx(d[:, :3].sum() / d.sum(), rel=1e-5)


# ------------------------------------------------------------------------------------------------
# Ground truth (glyphs)
# ------------------------------------------------------------------------------------------------


def test_style_r2_near_one_when_the_style_is_in_the_representation_and_near_zero_when_not():
  rng = np.random.default_rng(0)
  styles = glyphs.sample_styles(1200, rng)
  noise = rng.standard_normal((1200, 10)).astype(np.float32)
  exact = np.concatenate([noise, styles @ rng.standard_normal((6, 6))], axis=1)  # mixed, not copied
  r2 = ground_truth.style_r2(exact[:800], styles[:800], exact[800:], styles[800:])
  assert r2["mean"] > 0.99 and set(r2["per_factor"]) == set(glyphs.STYLE_NAMES)
  assert ground_truth.style_r2(noise[:800], styles[:800], noise[800:], styles[800:])["mean"] < 0.05


def test_identity_probe_high_for_identity_and_chance_for_noise():
  labels = _labels(classes=10, per_class=10)
  rng = np.random.default_rng(0)
  identity = np.eye(10)[labels] + 0.05 * rng.standard_normal((100, 10))
  assert ground_truth.identity_probe(identity, labels, seed=0) == pytest.approx(1.0)
  noise = rng.standard_normal((len(_labels(10, 40)), 10))
  assert ground_truth.identity_probe(noise, _labels(10, 40), seed=0) < 0.25  # chance 0.1


def test_half_split_per_class_is_disjoint_and_covers_every_class():
  labels = _labels(classes=5, per_class=7)
  fit, score = ground_truth.half_split_per_class(labels, seed=0)
  assert not set(fit) & set(score) and len(fit) + len(score) == len(labels)
  assert set(labels[fit]) == set(labels[score]) == set(range(5))


def _glyph_images(n, seed):
  rng = np.random.default_rng(seed)
  identities = glyphs.make_identities(n, seed=seed)
  return identities, glyphs.sample_styles(n, rng)


def test_translation_perfect_scores_one_and_no_translation_scores_zero():
  identities, styles = _glyph_images(8, seed=0)
  _, other_styles = _glyph_images(8, seed=1)
  target = glyphs.render(identities, styles)  # identity A in style B
  unchanged = glyphs.render(identities, other_styles)  # A as it was: no translation
  ceiling = np.clip(target + 0.05 * np.random.default_rng(0).standard_normal(target.shape), 0, 1)
  perfect = ground_truth.translation_scores(ceiling, unchanged, ceiling, target)
  none = ground_truth.translation_scores(unchanged, unchanged, ceiling, target)
  for metric in ("mse", "ssim"):
    assert perfect[metric]["score"] == pytest.approx(1.0)
    assert none[metric]["score"] == pytest.approx(0.0)
  assert perfect["mse"]["ceiling"] < perfect["mse"]["no_translation"]
  assert perfect["ssim"]["ceiling"] > perfect["ssim"]["no_translation"]


def test_ssim_and_normalised_score_edge_cases():
  identities, styles = _glyph_images(3, seed=2)
  images = glyphs.render(identities, styles)
  np.testing.assert_allclose(ground_truth.ssim(images, images), 1.0, atol=1e-6)
  assert ground_truth.normalised_score(0.5, 0.3, 0.3) is None
  assert ground_truth.normalised_score(0.2, 0.4, 0.0) == pytest.approx(0.5)  # errors: lower is better


def test_translation_pairs_have_different_classes():
  labels = _labels(classes=3, per_class=4)
  a, b = ground_truth.translation_pairs(labels, pairs=50, seed=0)
  assert np.all(labels[a] != labels[b])


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------


class _LinearAutoencoder:
  """A frozen linear plug-in: z = flatten(x) P, decode by the pseudo-inverse."""

  def __init__(self, image_shape, dim, seed=0):
    self.shape = image_shape
    self.p = np.random.default_rng(seed).standard_normal((int(np.prod(image_shape)), dim)).astype(np.float32)
    self.p_inv = np.linalg.pinv(self.p).astype(np.float32)

  def encode(self, x):
    return tf.reshape(x, (tf.shape(x)[0], -1)) @ self.p  # TF ops: encode_all calls it in a tf.function

  def decode(self, z):
    return tf.reshape(z @ self.p_inv, (-1,) + self.shape)


def _tiny_glyphs_run():
  """Tiny glyphs, a linear autoencoder plugged in, an untrained FDEN: (data, plugged, model, config)."""
  data = glyphs.load_glyphs(num_classes=30, num_test_classes=10, samples_per_class=6, seed=0)
  linear = _LinearAutoencoder(data.train.image_shape, dim=16)
  plugged = plugin.FrozenAutoencoder(linear.encode, linear.decode)
  config = config_lib.smoke().replace(fden={"eval_episodes": 20})
  model = fden_lib.FDEN.from_config_section(16, config.fden)
  return data, plugged, model, config


def test_evaluate_models_end_to_end_on_tiny_glyphs(tmp_path):
  data, plugged, model, config = _tiny_glyphs_run()
  results = evaluate_lib.evaluate_models(plugged, model, data, config, samples=50, mi_samples=50,
                                         mine_steps=5, translation_pairs=12)
  assert set(results) >= {"alignment", "independence", "fidelity", "ground_truth", "seconds"}
  assert results["alignment"]["episodes"] == 20
  assert results["ground_truth"]["identity_probe"]["classes"] == 10
  assert results["ground_truth"]["translation"]["pairs"] == 12
  assert results["independence"]["dcor_samples"] == 50
  text = report.format_report(results)
  assert "Identity alignment" in text and "translation" in text
  path = evaluate_lib.write_results(str(tmp_path), results)
  with open(path) as f:
    assert json.load(f)["dataset"] == "glyphs"
  assert "raw pixels" in text and 0.0 <= results["alignment"]["pixels"]["accuracy"] <= 1.0


def test_evaluate_models_takes_another_few_shot_task_and_scores_the_pixels():
  data, plugged, model, config = _tiny_glyphs_run()
  results = evaluate_lib.evaluate_models(plugged, model, data, config, samples=50, mi_samples=50,
                                         mine_steps=5, translation_pairs=12, way=3, shot=4, query=2)
  a = results["alignment"]
  assert (a["way"], a["shot"], a["query"], a["chance"]) == (3, 4, 2, 1 / 3)
  # The pixel baseline is nearest prototype on the flattened images, on the same episodes.
  expected = alignment.fewshot_alignment({"pixels": data.test.images.reshape(len(data.test.images), -1)},
                                         data.test.labels, 3, 4, 2, 20,
                                         config.seed + evaluate_lib.EVAL_SEED_OFFSET)["pixels"]
  assert a["pixels"] == expected
  with pytest.raises(ValueError):  # 4 + 3 samples a class asked of classes that have 6
    evaluate_lib.evaluate_models(plugged, model, data, config, samples=50, mi_samples=50, mine_steps=5,
                                 translation_pairs=12, shot=4, query=3)


def test_load_config_drops_keys_of_older_versions(tmp_path):
  saved = config_lib.smoke().to_dict()
  saved["progress"] = True  # a key older runs wrote
  saved["fden"]["retired_option"] = 1
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    json.dump(saved, f)
  assert runs.load_config(str(tmp_path)) == config_lib.smoke()


def test_evaluate_run_explains_a_missing_network(tmp_path):
  with open(os.path.join(tmp_path, "config.json"), "w") as f:
    json.dump(config_lib.smoke().to_dict(), f)
  with pytest.raises(ValueError, match="no fden/checkpoints"):
    evaluate_lib.evaluate_run(str(tmp_path))
  os.makedirs(os.path.join(tmp_path, "fden", "checkpoints"))
  with pytest.raises(FileNotFoundError, match="holds no ALI checkpoint"):
    evaluate_lib.evaluate_run(str(tmp_path))


def test_class_mean_codes_and_translation_references_have_known_answers():
  z = np.array([[0.0, 2.0], [2.0, 4.0], [10.0, 0.0], [7.0, 1.0], [4.0, 2.0]], np.float32)
  np.testing.assert_allclose(ground_truth.class_mean_codes(z, np.array([3, 3, 1, 1, 1])),
                             [[1, 3], [1, 3], [7, 1], [7, 1], [7, 1]])
  identities, styles = _glyph_images(6, seed=3)
  _, other_styles = _glyph_images(6, seed=4)
  target, unchanged = glyphs.render(identities, styles), glyphs.render(identities, other_styles)
  halfway = 0.5 * (target + unchanged)
  scores = ground_truth.translation_scores(unchanged, unchanged, target, target,
                                           references={"perfect": target, "halfway": halfway})
  assert scores["mse"]["score"] == pytest.approx(0.0) and scores["mse"]["perfect_score"] == pytest.approx(1.0)
  assert scores["mse"]["halfway_score"] == pytest.approx(0.75)  # half the difference: a quarter of the MSE
  assert scores["ssim"]["perfect_score"] == pytest.approx(1.0)


def test_oracle_translation_uses_the_true_style_and_scores_like_evaluate():
  """An oracle Entangler given the true styles beats one given nothing (zeros: it can only learn each
  class's mean code), on the fit and on translation; the pairs are translation_fidelity's."""
  data = glyphs.load_glyphs(num_classes=120, num_test_classes=20, samples_per_class=10, seed=0)
  linear = _LinearAutoencoder(data.train.image_shape, dim=128)
  plugged = plugin.FrozenAutoencoder(linear.encode, linear.decode)
  z_train, z_test = plugin.encode_all(plugged, data.train.images), plugin.encode_all(plugged, data.test.images)
  identities = {"class_mean": (ground_truth.class_mean_codes(z_train, data.train.labels),
                               ground_truth.class_mean_codes(z_test, data.test.labels))}
  nothing = {"zeros": (np.zeros((len(z_train), 6), np.float32), np.zeros((len(z_test), 6), np.float32))}
  rows = ground_truth.oracle_translation(plugged, data.train, data.test, z_train, z_test, identities, nothing,
                                         pairs=40, seed=0, steps=400)
  assert set(rows) == {"class_mean+true", "class_mean+zeros"}
  true, zeros = rows["class_mean+true"], rows["class_mean+zeros"]
  assert true["fit_error"] < zeros["fit_error"], rows
  # Measured (400 steps, a 128-dimensional random projection as the code): MSE 0.53 against 0.47, SSIM 0.54
  # against 0.42. An oracle that dropped the style would score the same as zeros.
  assert true["mse"] > zeros["mse"] + 0.02 and true["ssim"] > zeros["ssim"] + 0.02, rows


def test_styles_read_from_codes_recovers_the_style_a_code_holds_and_nothing_else():
  """ground_truth.styles_read_from on codes with known content: codes that hold the styles (mixed by a
  random matrix, beside class coordinates) give them back on unseen samples (R^2 near 1); codes of noise
  give nothing (R^2 near 0 or below), in the training styles' standardised units."""
  rng = np.random.default_rng(0)
  styles = rng.normal(size=(1200, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
  classes = rng.normal(size=(1200, 5))
  holding = np.concatenate([styles @ rng.normal(size=(3, 6)), classes], 1).astype(np.float32)
  noise = rng.normal(size=(1200, 11)).astype(np.float32)
  mean, std = styles[:1000].mean(0), styles[:1000].std(0)
  truth = (styles[1000:] - mean) / std

  def r2(z):
    train, test = ground_truth.styles_read_from(z[:1000], styles[:1000], z[1000:], steps=300, seed=0)
    assert train.shape == (1000, 3) and test.shape == (200, 3)
    return sk_metrics.r2_score(truth, test, multioutput="raw_values")

  assert np.all(r2(holding) > 0.9), r2(holding)
  assert np.all(r2(noise) < 0.1), r2(noise)
