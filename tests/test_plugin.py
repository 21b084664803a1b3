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
