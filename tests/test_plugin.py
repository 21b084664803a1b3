"""The plug-in contract: FDEN trains on any frozen encoder/decoder and never changes its weights."""

import numpy as np
import keras
import pytest
import tensorflow as tf

from fden_tf import ali as ali_lib
from fden_tf import config as config_lib
from fden_tf import pipeline
from fden_tf import plugin


def _smoke(**fden):
  return config_lib.smoke().replace(fden={"steps": 40, "eval_episodes": 50, **fden})


def _snapshot(variables):
  return [v.numpy().copy() for v in variables]


def test_fden_training_leaves_the_plugged_ali_bitwise_unchanged(tmp_path):
  config = _smoke()
  model = ali_lib.ALI("svhn", latent_dim=16, channels=1, width=0.125)
  plugged = plugin.from_ali(model)
  before = _snapshot(model.variables)
  assert len(before) > 20  # batch-norm moving statistics included
  metrics = pipeline.train_and_evaluate(config, str(tmp_path), stage="fden", plugged=plugged, export=False)
  assert metrics["fewshot"]["episodes"] == 50
  after = _snapshot(model.variables)
  for b, a in zip(before, after):
    np.testing.assert_array_equal(a, b)


def _autoencoder(latent=12):
  encoder = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(latent)])
  decoder = keras.Sequential([keras.Input((latent,)), keras.layers.Dense(32 * 32, activation="sigmoid"),
                              keras.layers.Reshape((32, 32, 1))])
  return encoder, decoder


def test_a_plain_keras_autoencoder_plugs_in_and_trains(tmp_path):
  encoder, decoder = _autoencoder()
  plugged = plugin.FrozenAutoencoder(encoder, decoder)
  before = _snapshot(plugged.variables)
  metrics = pipeline.train_and_evaluate(_smoke(), str(tmp_path), stage="fden", plugged=plugged, export=False)
  assert (tmp_path / "translation.png").exists()
  assert metrics["fden_train"]["step"] == 40
  assert np.isfinite(metrics["fden_train"]["loss"])
  for b, a in zip(before, _snapshot(plugged.variables)):
    np.testing.assert_array_equal(a, b)
  assert not encoder.trainable and not decoder.trainable


def test_saved_models_load_as_a_plug_in(tmp_path):
  encoder, decoder = _autoencoder(latent=6)
  encoder.save(tmp_path / "enc.keras")
  export = keras.export.ExportArchive()
  export.track(decoder)
  export.add_endpoint("serving_default", decoder.call,
                      input_signature=[tf.TensorSpec([None, 6], tf.float32)])
  export.write_out(str(tmp_path / "dec_savedmodel"))
  plugged = plugin.load_saved(str(tmp_path / "enc.keras"), str(tmp_path / "dec_savedmodel"))
  x = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
  z = plugged.encode(x)
  np.testing.assert_allclose(z.numpy(), encoder(x).numpy(), atol=1e-6)
  np.testing.assert_allclose(plugged.decode(z).numpy(), decoder(z).numpy(), atol=1e-6)
  with pytest.raises(FileNotFoundError):
    plugin.load_saved(str(tmp_path / "missing.keras"), str(tmp_path / "dec_savedmodel"))


def test_encode_all_batches_and_matches_direct_encoding():
  encoder, decoder = _autoencoder()
  plugged = plugin.FrozenAutoencoder(encoder, decoder)
  x = np.random.default_rng(1).uniform(size=(23, 32, 32, 1)).astype(np.float32)
  z = plugin.encode_all(plugged, x, batch_size=5)
  assert z.shape == (23, 12) and z.dtype == np.float32
  np.testing.assert_allclose(z, encoder(x).numpy(), atol=1e-5)


def test_encode_all_traces_each_batch_shape_once_per_network():
  traces = []

  def encoder(x):
    traces.append(x.shape[0])  # Python runs only while TensorFlow traces
    return tf.reshape(x, (tf.shape(x)[0], -1))

  plugged = plugin.FrozenAutoencoder(encoder, lambda z: z)
  x = np.random.default_rng(2).uniform(size=(12, 2, 2, 1)).astype(np.float32)
  first = plugin.encode_all(plugged, x, batch_size=5)  # batches of 5, 5, 2
  again = plugin.encode_all(plugged, x[::-1].copy(), batch_size=5)  # the same shapes: no new trace
  assert traces == [5, 2]
  np.testing.assert_array_equal(first, x.reshape(12, -1))
  np.testing.assert_array_equal(again, x[::-1].reshape(12, -1))


def test_mirrored_training_codes_are_the_mirror_images_codes_labelled_as_their_originals():
  from fden_tf.data import split as split_lib
  # The code of an image is its first column, so a mirror's code is its last column: a known answer.
  plugged = plugin.FrozenAutoencoder(lambda x: x[:, :, 0, 0], lambda z: z)
  images = np.random.default_rng(0).uniform(size=(7, 4, 5, 1)).astype(np.float32)
  train = split_lib.Split(images, np.arange(7, dtype=np.int32) % 3, ["a", "b", "c"])
  z = plugin.encode_all(plugged, images)
  same = pipeline.fden_training_codes(plugged, train, z, mirrors=False)
  assert same[0] is z and same[1] is train.labels
  codes, labels = pipeline.fden_training_codes(plugged, train, z, mirrors=True)
  np.testing.assert_array_equal(codes, np.concatenate([images[:, :, 0, 0], images[:, :, -1, 0]]))
  np.testing.assert_array_equal(labels, np.concatenate([train.labels, train.labels]))


def test_jittered_training_codes_follow_the_originals_and_mirrors_in_order_labelled_as_them():
  from fden_tf.data import augment
  from fden_tf.data import split as split_lib
  plugged = plugin.FrozenAutoencoder(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), lambda z: z)  # code = pixels
  images = np.random.default_rng(1).uniform(size=(6, 8, 8, 1)).astype(np.float32)
  train = split_lib.Split(images, np.arange(6, dtype=np.int32) % 2, ["a", "b"])
  z = plugin.encode_all(plugged, images)
  codes, labels = pipeline.fden_training_codes(plugged, train, z, mirrors=True, jitters=2, seed=5)
  flat = lambda x: x.reshape(len(x), -1)
  np.testing.assert_array_equal(codes, np.concatenate([flat(images), flat(images[:, :, ::-1]),
                                                       flat(augment.jitter(images, seed=6)),
                                                       flat(augment.jitter(images, seed=7))]))
  np.testing.assert_array_equal(labels, np.tile(train.labels, 4))


class _LinearEncoder(tf.Module):
  """A tf.Module with its own variable: what tf.saved_model.save writes for a non-Keras network."""

  def __init__(self, latent):
    super().__init__()
    self.w = tf.Variable(np.random.default_rng(3).normal(size=(32 * 32, latent)).astype(np.float32))

  @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 1], tf.float32)])
  def __call__(self, x):
    return tf.matmul(tf.reshape(x, [-1, 32 * 32]), self.w)


def test_savedmodels_of_tf_saved_model_save_and_keras_export_keep_their_variables(tmp_path):
  import gc
  module = _LinearEncoder(6)
  tf.saved_model.save(module, str(tmp_path / "enc_tf"), signatures=module.__call__)
  _, decoder = _autoencoder(latent=6)
  decoder.export(str(tmp_path / "dec_keras_export"))  # Keras 3's model.export(): serve + serving_default
  plugged = plugin.load_saved(str(tmp_path / "enc_tf"), str(tmp_path / "dec_keras_export"))
  gc.collect()  # the loaded objects own the variables: with only their signatures kept, calls fail here
  x = np.random.default_rng(0).uniform(size=(3, 32, 32, 1)).astype(np.float32)
  z = plugged.encode(x)
  np.testing.assert_allclose(z.numpy(), module(x).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(plugged.decode(z).numpy(), decoder(z).numpy(), atol=1e-6)
  assert plugged.paths == (str(tmp_path / "enc_tf"), str(tmp_path / "dec_keras_export"))
  assert len(plugged.variables) >= 3  # the module's w, the decoder's kernel and bias
  assert plugin.check_plugged(plugged, x) == 6


def test_paths_that_are_not_saved_models_are_one_clear_error(tmp_path):
  (tmp_path / "not_a_model").mkdir()
  (tmp_path / "not_a_model" / "notes.txt").write_text("x")
  (tmp_path / "broken.keras").write_text("not a zip")
  with pytest.raises(ValueError, match="not a SavedModel folder"):
    plugin._load_one(str(tmp_path / "not_a_model"))
  with pytest.raises(ValueError, match="not a Keras .keras archive"):
    plugin._load_one(str(tmp_path / "broken.keras"))
  with pytest.raises(FileNotFoundError):
    plugin._load_one(str(tmp_path / "missing"))


@pytest.mark.parametrize("case, message", [
    ("wrong_image_shape", "encoder fails on the dataset's 32x32x1 images"),
    ("four_d_codes", r"codes of shape \[2, 1, 1, 12\]"),
    ("dim_mismatch", "decoder fails on the encoder's 12-dimensional codes"),
    ("nan_codes", "non-finite codes"),
    ("wrong_output_shape", r"decoder returns shape \[2, 16, 16, 1\]"),
])
def test_a_plugged_network_that_does_not_fit_is_refused_before_training(tmp_path, case, message):
  encoder, decoder = _autoencoder()
  if case == "wrong_image_shape":
    encoder = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(12)])
  elif case == "four_d_codes":
    encoder = keras.Sequential([encoder, keras.layers.Reshape((1, 1, 12))])
  elif case == "dim_mismatch":
    decoder = _autoencoder(latent=5)[1]
  elif case == "nan_codes":
    encoder = keras.Sequential([encoder, keras.layers.Lambda(lambda z: z * np.float32("nan"))])
  else:
    decoder = keras.Sequential([keras.Input((12,)), keras.layers.Dense(256),
                                keras.layers.Reshape((16, 16, 1))])
  plugged = plugin.FrozenAutoencoder(encoder, decoder)
  with pytest.raises(ValueError, match=message):
    pipeline.train_and_evaluate(_smoke(), str(tmp_path / "run"), stage="fden", plugged=plugged, export=False)
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_fdens_draw_does_not_depend_on_what_ran_before_it(tmp_path, monkeypatch):
  """FDEN's initial weights come from its own seed (FDENConfig.seed, else Config.seed), not from wherever
  the generator stood when its stage began: a run whose earlier stages drew more random numbers (the main
  job's ALI, built and trained before FDEN; here a throwaway layer built while the codes are cached)
  trains the same FDEN as FDEN alone on that network (--stage=fden --ali_dir)."""
  plugged = plugin.FrozenAutoencoder(*_autoencoder())
  run = lambda name: pipeline.train_and_evaluate(_smoke(), str(tmp_path / name), stage="fden",
                                                 plugged=plugged, export=False)
  alone = run("alone")
  cache = pipeline.fden_training_codes

  def cache_after_other_draws(*args, **kwargs):
    keras.layers.Dense(64).build((None, 64))  # draws its initial weights from the global generator
    return cache(*args, **kwargs)

  monkeypatch.setattr(pipeline, "fden_training_codes", cache_after_other_draws)
  after_other_draws = run("after_other_draws")
  assert after_other_draws["fden_train"]["loss"] == alone["fden_train"]["loss"]
  assert after_other_draws["fewshot"] == alone["fewshot"]


def test_fden_seed_redraws_fden_alone_and_keeps_the_data_and_test_episodes(tmp_path):
  """FDENConfig.seed: the same seed gives the same FDEN, another one another FDEN (its weights, episodes and
  jittered copies), while the data split and the test episodes stay those of Config.seed (z's few-shot
  accuracy, which FDEN does not touch, is the same on every run)."""
  plugged = plugin.FrozenAutoencoder(*_autoencoder())
  run = lambda name, seed: pipeline.train_and_evaluate(_smoke(seed=seed, cache_jitters=1), str(tmp_path / name),
                                                       stage="fden", plugged=plugged, export=False)
  first, other, again = run("first", 1), run("other", 2), run("again", 1)
  assert again["fden_train"]["loss"] == first["fden_train"]["loss"]
  assert again["fewshot"] == first["fewshot"]
  assert other["fden_train"]["loss"] != first["fden_train"]["loss"]
  assert other["fewshot_baselines"]["z"] == first["fewshot_baselines"]["z"]
