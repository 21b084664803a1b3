import keras
import numpy as np
import pytest
import tensorflow as tf

from fden_tf import ali
from fden_tf import fden


def dense(i, o):
  return i * o + o


@pytest.mark.parametrize("arch,channels", [("svhn", 1), ("svhn", 3), ("celeba", 3)])
def test_ali_shapes_follow_the_published_models(arch, channels):
  model = ali.ALI(arch, latent_dim=16, channels=channels, width=0.125)
  size = ali.ARCHITECTURES[arch].image_size
  x = tf.random.uniform((3, size, size, channels))
  mu, log_sigma = model.encoder(x)
  assert mu.shape == (3, 16) and log_sigma.shape == (3, 16)
  assert model.decode(mu).shape == (3, size, size, channels)
  assert model.discriminator(x, mu).shape == (3,)
  out = model.decode(mu).numpy()
  assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("arch", ["svhn", "celeba"])
def test_resize_generator_makes_images_of_the_published_size(arch):
  model = ali.ALI(arch, latent_dim=16, channels=3, width=0.125, generator_upsampling="resize")
  size = ali.ARCHITECTURES[arch].image_size
  out = model.decode(tf.random.normal((2, 16)))
  assert out.shape == (2, size, size, 3)
  assert any(isinstance(conv, ali.ResizeConv2D) for conv, _, _ in model.generator.blocks)
  with pytest.raises(ValueError, match="unknown generator upsampling 'bilinear'"):
    ali.ALI(arch, latent_dim=16, channels=3, width=0.125, generator_upsampling="bilinear")


def test_a_config_with_an_unknown_upsampling_is_refused_before_any_model_is_built():
  import dataclasses
  from fden_tf import config, train_ali
  bad = dataclasses.replace(config.ALIConfig(), generator_upsampling="deconv")
  with pytest.raises(ValueError, match=r"unknown --ali_generator_upsampling 'deconv'; choose one of "
                                       r"\('transposed', 'resize'\)"):
    train_ali.build_ali(bad, (32, 32, 1))


def test_resize_convolution_paints_no_checkerboard_where_the_transposed_one_does():
  # A constant input through an all-ones kernel: each output of the CelebA model's 7x7 stride-2 transposed
  # convolution sums the 4 or 3 input taps that reach it along each axis (16, 12 or 9: a checkerboard),
  # where the resize-convolution's 3x3 kernel always sums 9.
  x = tf.ones((1, 4, 4, 1))
  transposed = keras.layers.Conv2DTranspose(1, 7, 2, "valid", use_bias=False, kernel_initializer="ones")
  resized = ali.ResizeConv2D(1, 13)
  resized.build(x.shape)
  resized.conv.kernel.assign(tf.ones((3, 3, 1, 1)))
  inner = slice(5, 8)  # away from the borders, which both pad differently
  t = transposed(x).numpy()[0, inner, inner, 0]
  np.testing.assert_array_equal(t, [[9, 12, 9], [12, 16, 12], [9, 12, 9]])
  r = resized(x).numpy()
  assert r.shape == (1, 13, 13, 1)
  np.testing.assert_array_equal(r[0, 1:-1, 1:-1, 0], 9.0)


def test_ali_svhn_encoder_parameter_count_matches_hand_count():
  model = ali.ALI("svhn", latent_dim=256, channels=1, width=1.0)
  convs = [5 * 5 * 1 * 32, 4 * 4 * 32 * 64, 4 * 4 * 64 * 128, 4 * 4 * 128 * 256, 4 * 4 * 256 * 512,
           1 * 1 * 512 * 512]
  batch_norm = 4 * (32 + 64 + 128 + 256 + 512 + 512)  # gamma, beta, moving mean, moving variance
  head = dense(512, 2 * 256)
  assert model.encoder.count_params() == sum(convs) + batch_norm + head


def test_ali_generator_starts_at_the_mean_image():
  images = np.random.default_rng(0).uniform(0.05, 0.3, (50, 32, 32, 1)).astype(np.float32)
  model = ali.ALI("svhn", 8, 1, 0.125, pixel_log_odds=ali.pixel_log_odds(images))
  # The conv weights are N(0, 0.01), so the output is close to sigmoid(log-odds) = the mean image.
  out = model.decode(tf.zeros((1, 8))).numpy()[0]
  np.testing.assert_allclose(out, images.mean(0), atol=0.02)


def test_config_knows_each_architectures_image_size():
  from fden_tf import config
  assert {name: a.image_size for name, a in ali.ARCHITECTURES.items()} == config.ARCHITECTURE_IMAGE_SIZE


def test_architecture_lookup_errors():
  with pytest.raises(ValueError, match="unknown ALI architecture"):
    ali.get_architecture("imagenet")
  assert ali.architecture_for_image_size(64) == "celeba"
  with pytest.raises(ValueError, match="no ALI architecture"):
    ali.architecture_for_image_size(48)


def test_fden_table2_parameter_count_and_shapes():
  dim = 256
  model = fden.FDEN(dim)
  bn = lambda n: 4 * n
  d_dec = dense(dim, 512) + bn(512) + dense(512, 512) * 2 + dense(512, 2 * dim)
  d_factor = dense(2 * dim, 512) + bn(512) + dense(512, 512) + dense(512, dim)
  e_factor = dense(dim, 256) + bn(256) + dense(256, 256) + dense(256, dim)
  e_enc = dense(2 * dim, 512) + bn(512) + dense(512, 512) * 2 + dense(512, dim)
  f_mi = dense(2 * dim, 1024) + bn(1024) + dense(1024, 256) + dense(256, 64) + dense(64, 1)
  assert model.disentangler.count_params() == d_dec + 2 * d_factor
  assert model.entangler.count_params() == 2 * e_factor + e_enc
  assert model.statistician.count_params() == f_mi
  z = tf.random.normal((4, dim))
  f_ide, f_sty, z_tilde = model(z)
  assert f_ide.shape == f_sty.shape == z_tilde.shape == (4, dim)


def test_fden_inference_is_deterministic_and_training_uses_dropout():
  model = fden.FDEN(8, hidden_scale=0.1, init_stddev=0.1)
  z = tf.random.normal((16, 8))
  np.testing.assert_array_equal(model.disentangle(z)[0].numpy(), model.disentangle(z)[0].numpy())
  a = model(z, training=True)[0].numpy()
  b = model(z, training=True)[0].numpy()
  assert not np.array_equal(a, b)


def test_statistician_sits_behind_the_gradient_reversal_layer():
  model = fden.FDEN(4, hidden_scale=0.1, init_stddev=0.1, grl_lambda=1.0)
  f_ide = tf.random.normal((8, 4))
  f_sty = tf.random.normal((8, 4))
  perm = tf.range(8)[::-1]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([f_ide, f_sty])
    t_joint, _ = model.statistician_outputs(f_ide, f_sty, perm)
    direct = model.statistician(f_ide, f_sty)
    s1, s2 = tf.reduce_sum(t_joint), tf.reduce_sum(direct)
  np.testing.assert_allclose(t_joint.numpy(), direct.numpy(), atol=1e-6)
  np.testing.assert_allclose(tape.gradient(s1, f_ide).numpy(), -tape.gradient(s2, f_ide).numpy(), atol=1e-6)


def test_standardized_fden_is_invariant_to_the_scale_and_offset_of_the_codes():
  z = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32) * [1, 2, 3, 4, 5, 6]
  outputs = []
  for scale, offset in ((1.0, 0.0), (10.0, 3.0)):
    keras.utils.set_random_seed(1)
    model = fden.FDEN(6, hidden_scale=0.05, init_stddev=0.1, standardize=True)
    codes = z * scale + offset
    model.set_latent_statistics(codes)
    f_ide, f_sty, z_tilde = model(codes)
    standardized = model.standardize(codes).numpy()
    np.testing.assert_allclose(standardized.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(0), 1.0, atol=1e-4)
    outputs.append((f_ide.numpy(), ((z_tilde.numpy() - offset) / scale)))
  np.testing.assert_allclose(outputs[0][0], outputs[1][0], atol=1e-4)  # the same factors
  np.testing.assert_allclose(outputs[0][1], outputs[1][1], atol=1e-4)  # z~ in the codes' own units
  plain = fden.FDEN(6, hidden_scale=0.05)
  assert plain.frozen_statistics == [] and len(model.frozen_statistics) == 2
  assert len(model.variables) == len(plain.variables) + 2  # appended last: older checkpoints keep their layout


def test_global_standardization_keeps_the_geometry_of_the_codes():
  """standardization "global": one scale for every coordinate, the RMS spread (sqrt of the mean variance),
  so distances between codes shrink by one factor and a quiet coordinate stays quiet; the round trip is
  the identity, and a per-dimension FDEN gives each coordinate unit spread instead."""
  from fden_tf import config as config_lib
  z = (np.random.default_rng(0).standard_normal((500, 4)) * [1.0, 2.0, 0.01, 4.0] + 5.0).astype(np.float32)
  model = fden.FDEN.from_config_section(4, config_lib.FDENConfig(
      hidden_scale=0.05, standardize_latents=True, standardization="global"))
  model.set_latent_statistics(z)
  rms = np.sqrt(z.astype(np.float64).var(0).mean())
  np.testing.assert_allclose(model.latent_statistics.scale.numpy(), np.full(4, rms), rtol=1e-5)
  s = model.standardize(z).numpy()
  np.testing.assert_allclose(s.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(np.mean(s.var(0)), 1.0, rtol=1e-4)
  np.testing.assert_allclose(s.std(0) / s.std(0)[0], z.std(0) / z.std(0)[0], rtol=1e-4)  # ratios kept
  np.testing.assert_allclose(model.unstandardize(s).numpy(), z, atol=1e-4)
  per_dim = fden.FDEN(4, hidden_scale=0.05, standardize="per_dimension")
  per_dim.set_latent_statistics(z)
  np.testing.assert_allclose(per_dim.standardize(z).numpy().std(0), 1.0, rtol=1e-3)
  with pytest.raises(ValueError, match="standardize must be"):
    fden.FDEN(4, hidden_scale=0.05, standardize="per_coordinate")


def test_a_narrow_style_factor_has_its_own_size_everywhere():
  """FDENConfig.style_dim: f_sty is [B, style_dim], f_ide and z~ keep Dim, F_mi reads both; the paper's
  FDEN (style_dim None) keeps its variables and shapes."""
  from fden_tf import config as config_lib
  model = fden.FDEN.from_config_section(6, config_lib.FDENConfig(hidden_scale=0.05, style_dim=2))
  z = tf.random.stateless_normal([5, 6], [0, 1])
  f_ide, f_sty, z_tilde = model(z)
  assert (f_ide.shape, f_sty.shape, z_tilde.shape) == ((5, 6), (5, 2), (5, 6))
  assert model.style_dim == 2 and model.entangle(f_ide, f_sty).shape == (5, 6)
  assert model.statistician_outputs(f_ide, f_sty, tf.range(5)[::-1])[0].shape == (5,)
  assert model.disentangler.sty.denses[-1].kernel.shape[-1] == 2
  assert model.entangler.sty.denses[0].kernel.shape[0] == 2
  paper = fden.FDEN.from_config_section(6, config_lib.FDENConfig(hidden_scale=0.05))
  assert paper.style_dim == 6 and [v.shape for v in paper.variables] == [
      v.shape for v in fden.FDEN(6, hidden_scale=0.05).variables]
