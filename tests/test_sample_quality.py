"""The prior-sample quality number (metrics/sample_quality.py) on known answers."""

import numpy as np
import pytest
import tensorflow as tf

from fden_tf.data import glyphs
from fden_tf.metrics import sample_quality


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((20000, 3))
  assert sample_quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
  # Equal covariances: the squared distance of the means.
  assert sample_quality.frechet_distance(a, a + [1.0, 2.0, 0.0]) == pytest.approx(5.0, rel=1e-6)
  # One dimension, standard deviations s and 3 s, equal means: (s - 3 s)^2 = 4 s^2.
  b = rng.standard_normal((20000, 1))
  b -= b.mean()
  assert sample_quality.frechet_distance(b, 3.0 * b) == pytest.approx(4.0 * b.var(ddof=1), rel=1e-9)


def test_blur_keeps_constant_images_and_smooths_a_point():
  flat = np.full((1, 9, 9, 1), 0.3, np.float32)
  np.testing.assert_allclose(sample_quality.blur(flat), flat, atol=1e-6)
  point = np.zeros((1, 15, 15, 1), np.float32)
  point[0, 7, 7, 0] = 1.0
  blurred = sample_quality.blur(point)
  assert blurred.sum() == pytest.approx(1.0, rel=1e-5) and blurred.max() < 0.2


def test_real_images_score_near_zero_and_noise_near_one():
  data = glyphs.load_glyphs(num_classes=60, num_test_classes=10, samples_per_class=40, seed=0)
  images, labels = data.train.images, data.train.labels
  noise = lambda z: np.random.default_rng(1).uniform(size=(len(z),) + images.shape[1:]).astype(np.float32)
  real = lambda z: images[np.random.default_rng(2).choice(len(images), len(z))]
  encode = lambda x: np.zeros((len(x), 4), np.float32)
  by_noise = sample_quality.evaluate(noise, encode, 4, images, labels, samples=400, seed=0)
  by_real = sample_quality.evaluate(real, encode, 4, images, labels, samples=400, seed=0)
  fd = by_real["frechet_distance"]
  assert fd["real"] < 0.2 * fd["blurred"] < fd["noise"]
  assert by_noise["score"] == pytest.approx(1.0, abs=0.1)  # noise as far as the noise reference
  assert by_real["score"] < 0.1
  # Constant codes with no posterior noise: every direction is thin and holds all of a prior draw; with
  # unit posterior noise none is.
  assert by_real["code_span"]["thin_directions"] == 4
  assert by_real["code_span"]["prior_energy_in_thin_directions"] == pytest.approx(1.0)
  unit = lambda x: np.ones((len(x), 4), np.float32)
  noisy = sample_quality.evaluate(real, encode, 4, images, labels, samples=100, seed=0, posterior_variance=unit)
  assert noisy["code_span"]["thin_directions"] == 0


def test_features_that_cannot_tell_noise_from_data_give_no_score_not_an_error():
  """A collapsed feature network (every feature constant: what a ReLU feature layer did on Omniglot's
  4,800 classes) measures nothing; evaluate returns NaN instead of dividing by zero after a long training."""
  data = glyphs.load_glyphs(num_classes=20, num_test_classes=5, samples_per_class=20, seed=0)
  images, labels = data.train.images, data.train.labels
  collapsed = lambda x: np.zeros((len(x), sample_quality.FEATURES), np.float32)
  decode = lambda z: np.zeros((len(z),) + images.shape[1:], np.float32)
  encode = lambda x: np.zeros((len(x), 4), np.float32)
  result = sample_quality.evaluate(decode, encode, 4, images, labels, samples=50, seed=0, features=collapsed)
  assert np.isnan(result["score"]) and result["frechet_distance"]["noise"] == 0.0


def test_feature_network_features_are_not_dead_on_many_classes():
  """The features stay informative when the classifier has many classes and little data per class (the
  regime in which ReLU features all died): no feature is constant over the images (with the old ReLU
  layer 53-63% of them were, on these images and seeds 0-2), and real and noise images differ."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(600, 16, 16, 1)).astype(np.float32) * 0.2
  images[:, 4:12, 4:12] += 0.8
  labels = np.arange(600) % 300
  features = sample_quality.train_feature_network(images, labels, epochs=1)
  real, noise = features(images[:100]), features(rng.uniform(size=(100, 16, 16, 1)).astype(np.float32))
  assert np.all(real.std(0) > 0), f"{np.mean(real.std(0) == 0):.0%} of the features are dead"
  assert sample_quality.frechet_distance(real, noise) > 0


def test_code_span_known_answers():
  rng = np.random.default_rng(0)
  draws = rng.standard_normal((4000, 16))
  # Codes that fill 4 of 16 coordinates, each shifted (centring removes the offset): rank 4, and 12/16 of
  # an N(0, I) draw's energy outside their span.
  codes = np.zeros((300, 16))
  codes[:, :4] = rng.standard_normal((300, 4)) * [1.0, 2.0, 0.5, 3.0]
  codes += 7.0
  span = sample_quality.code_span(codes, draws)
  assert span["rank"] == 4 and span["dim"] == 16
  assert span["prior_energy_outside"] == pytest.approx(0.75, abs=0.02)
  # Codes that fill the space leave nothing outside; draws inside a subspace leave nothing either.
  full = sample_quality.code_span(rng.standard_normal((300, 16)), draws)
  assert full["rank"] == 16 and full["prior_energy_outside"] == pytest.approx(0.0, abs=1e-9)
  inside = draws.copy()
  inside[:, 4:] = 0.0
  assert sample_quality.code_span(codes, inside)["prior_energy_outside"] == pytest.approx(0.0, abs=1e-9)


def test_thin_directions_known_answers():
  rng = np.random.default_rng(0)
  draws = rng.standard_normal((4000, 16))
  # Codes that vary in 4 of 16 coordinates, rotated: without posterior noise the other 12 directions are
  # thin and hold 12/16 of a prior draw's energy.
  rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
  codes = np.zeros((3000, 16))
  codes[:, :4] = rng.standard_normal((3000, 4))
  codes = codes @ rotation.T
  thin = sample_quality.thin_directions(codes, np.zeros(16), draws)
  assert thin["thin_directions"] == 12 and thin["thin_floor"] == 0.1
  assert thin["prior_energy_in_thin_directions"] == pytest.approx(0.75, abs=0.02)
  # Posterior noise of variance 0.5 in every coordinate fills them (at the price of noise on the coded
  # directions too); noise of 0.05 does not.
  assert sample_quality.thin_directions(codes, np.full(16, 0.5), draws)["thin_directions"] == 0
  assert sample_quality.thin_directions(codes, np.full(16, 0.05), draws)["thin_directions"] == 12


def test_a_real_alis_posterior_noise_starts_at_the_priors_and_collapses_in_training(tmp_path):
  # ALI's initial weights (N(0, 0.01)) give log sigma near 0: the noise alone fills every direction. The smoke
  # ALI trained 100 steps on glyphs (ALI's objective + l2) shrinks the noise and codes in a few directions,
  # so most of a prior draw falls where the generator was never asked to reconstruct anything: what
  # `thin_directions` reports in metrics.json.
  import dataclasses
  import keras
  from fden_tf import ali as ali_lib, config, losses, train_ali
  images = glyphs.load_glyphs(num_classes=40, num_test_classes=10, samples_per_class=20, seed=0).train.images
  c = dataclasses.replace(config.smoke().ali, steps=100)
  draws = np.random.default_rng(0).standard_normal((2000, c.latent_dim))
  keras.utils.set_random_seed(0)
  model = ali_lib.ALI("svhn", c.latent_dim, 1, c.width)
  measure = lambda: sample_quality.thin_directions(model.encode(images).numpy(),
                                                   model.posterior_variance(images).numpy().mean(axis=0), draws)
  assert measure()["thin_directions"] == 0
  train_ali.train(model, c, images, str(tmp_path), show_progress=False)
  thin = measure()
  assert thin["thin_directions"] >= 24 and thin["prior_energy_in_thin_directions"] > 0.7
  # The same 100 steps with the posterior means' moments pulled towards the prior's
  # (ALIConfig.prior_moment_weight 10) end nearer them: the moment distance 0.99 against 1.26 under pytest on
  # the 2-core AMD EPYC VM. About 1 is the distance of codes with no variance yet, which 100 steps cannot go
  # far below, so the margins are asserted on its parts: ||E mu||^2 3.40 -> 1.29 and the largest variance of
  # mu 0.012 -> 0.25.
  def moments():
    mu = model.encode(images).numpy()
    return (float(losses.prior_moment_matching(tf.constant(mu)).numpy()), float(np.sum(mu.mean(0) ** 2)),
            float(np.linalg.eigvalsh(np.cov(mu, rowvar=False)).max()))
  without = moments()
  keras.utils.set_random_seed(0)
  model = ali_lib.ALI("svhn", c.latent_dim, 1, c.width)
  train_ali.train(model, dataclasses.replace(c, prior_moment_weight=10.0), images, str(tmp_path / "moments"),
                  show_progress=False)
  (distance, mean, top_variance), (distance_without, mean_without, top_variance_without) = moments(), without
  assert distance < distance_without, (distance, distance_without)
  assert mean < 0.6 * mean_without, (mean, mean_without)
  assert top_variance > 5 * top_variance_without, (top_variance, top_variance_without)


def test_an_encoder_narrower_than_its_code_spans_a_subspace_and_preflight_says_so(caplog):
  import dataclasses
  from fden_tf import ali, config, preflight, train_ali
  for name, arch in ali.ARCHITECTURES.items():  # the preflight's table follows the models
    assert config.ARCHITECTURE_CODE_FEATURES[name] == arch.encoder[-1][2]
  # The CelebA model at width 1/8 (flowers_cpu's) ends in 64 features: a code of 128 spans 64 dimensions at
  # most, so flowers_cpu asks for 64.
  narrow = dataclasses.replace(config.flowers_cpu().ali, latent_dim=128)
  assert (config.flowers_cpu().ali.latent_dim, config.code_rank_bound(narrow)) == (64, 64)
  with caplog.at_level("WARNING"):
    model = train_ali.build_ali(narrow, (64, 64, 3))  # says so once, as it builds the model
  assert caplog.text.count("--latent_dim=128 exceeds the 64 features of ALI's last encoder layer") == 1
  images = tf.random.stateless_uniform((200, 64, 64, 3), seed=(1, 2))
  codes = model.encode(images).numpy()
  draws = np.random.default_rng(0).standard_normal((2000, 128))
  span = sample_quality.code_span(codes, draws)
  assert span["rank"] == 64 and span["prior_energy_outside"] == pytest.approx(0.5, abs=0.03)
  caplog.clear()
  with caplog.at_level("WARNING"):
    preflight.check_architecture(narrow, (64, 64, 3))  # the checks every preflight pass runs stay quiet
    for preset in config.PRESETS:  # no preset asks for more than its encoder spans
      preflight.warn_if_codes_cannot_fill_the_latent(config.get(preset).ali)
  assert "exceeds" not in caplog.text
