"""The plug-in interface: any frozen encoder/decoder pair FDEN can disentangle, ALI or the user's own.

A plugged network needs only two functions, `encode(images [B, H, W, C]) -> z [B, Dim]` and
`decode(z) -> images`, both deterministic, and is never trained by FDEN. Because it is frozen, its codes are
computed once per image (`encode_all`) and FDEN trains on that cache instead of re-encoding every step.

    from fden_tf import plugin
    plugged = plugin.FrozenAutoencoder(my_vae_encoder, my_vae_decoder)   # Keras models or callables
    plugged = plugin.load_saved("enc_savedmodel/", "dec.keras")          # or from disk
"""

import os

import keras
import numpy as np
import tensorflow as tf

from fden_tf import progress as progress_lib


class FrozenAutoencoder:
  """Wraps an encoder and a decoder as a frozen plug-in network.

  encoder: Keras model or callable, images -> z [B, Dim] (a tuple/list output such as (mu, log_sigma) uses
    its first element, a dict output its "z" entry). Keras models are called with training=False.
  decoder: Keras model or callable, z -> images.
  """

  def __init__(self, encoder, decoder, name="plugged", variables=None):
    self.name = name
    self._encoder = encoder
    self._decoder = decoder
    self._variables = variables
    for net in (encoder, decoder):
      if isinstance(net, keras.Model):
        net.trainable = False  # a frozen network can never be handed to an optimizer by accident

  @staticmethod
  def _call(net, x):
    out = net(x, training=False) if isinstance(net, keras.Model) else net(x)
    if isinstance(out, dict):
      out = out["z"] if "z" in out else next(iter(out.values()))
    if isinstance(out, (tuple, list)):
      out = out[0]
    return out

  def encode(self, images):
    return tf.convert_to_tensor(self._call(self._encoder, images), tf.float32)

  def decode(self, z):
    return tf.convert_to_tensor(self._call(self._decoder, z), tf.float32)

  @property
  def variables(self):
    """Every weight of both networks (for checks that FDEN left them untouched)."""
    if self._variables is not None:
      return list(self._variables)
    return [v for net in (self._encoder, self._decoder) for v in (getattr(net, "variables", None) or [])]


def from_ali(ali) -> FrozenAutoencoder:
  """ALI as a plug-in: the posterior mean of G_z as the code, G_x as the decoder."""
  ali.trainable = False
  return FrozenAutoencoder(ali.encode, ali.decode, name="ali", variables=ali.variables)


def _load_one(path):
  if not os.path.exists(path):
    raise FileNotFoundError(f"no saved model at {path}")
  if path.endswith(".keras"):
    return keras.models.load_model(path, compile=False)
  loaded = tf.saved_model.load(path)
  if "serving_default" in getattr(loaded, "signatures", {}):
    fn = loaded.signatures["serving_default"]
    input_name = list(fn.structured_input_signature[1].keys())[0]
    return lambda x: fn(**{input_name: tf.convert_to_tensor(x)})
  if callable(loaded):
    return loaded
  raise ValueError(f"{path} holds a SavedModel with neither a serving_default signature nor __call__")


def load_saved(encoder_path: str, decoder_path: str) -> FrozenAutoencoder:
  """A plug-in from two saved models: `.keras` files or SavedModel directories (TF or Keras exported)."""
  return FrozenAutoencoder(_load_one(encoder_path), _load_one(decoder_path), name="saved")


def encode_all(plugged, images: np.ndarray, batch_size: int = 500, show_progress: bool = False,
               desc: str = "caching latents") -> np.ndarray:
  """The latent cache: plugged.encode over `images` [N, H, W, C] in batches -> float32 [N, Dim]."""
  encode = tf.function(plugged.encode)
  out = []
  bar = progress_lib.Progress(len(images), desc, enabled=show_progress, unit="img")
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    out.append(np.asarray(encode(tf.convert_to_tensor(batch, tf.float32))))
    bar.update(len(batch))
  bar.close()
  z = np.concatenate(out, axis=0).astype(np.float32)
  if z.ndim != 2:
    z = z.reshape(len(z), -1)
  return z


def decode_all(plugged, z: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """plugged.decode over codes z [N, Dim] in batches -> float32 images [N, H, W, C].

  Eager: a handful of batches per call, and a fresh tf.function per call would only retrace.
  """
  parts = [np.asarray(plugged.decode(tf.convert_to_tensor(z[i:i + batch_size], tf.float32)))
           for i in range(0, len(z), batch_size)]
  return np.concatenate(parts).astype(np.float32)
