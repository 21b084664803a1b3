"""The plug-in interface: any frozen encoder/decoder pair FDEN can disentangle, ALI or the user's own.

A plugged network needs only two functions, `encode(images [B, H, W, C]) -> z [B, Dim]` and
`decode(z) -> images`, both deterministic, and is never trained by FDEN. Because it is frozen, its codes are
computed once per image (`encode_all`) and FDEN trains on that cache instead of re-encoding every step.

    from fden_tf import plugin
    plugged = plugin.FrozenAutoencoder(my_vae_encoder, my_vae_decoder)   # Keras models or callables
    plugged = plugin.load_saved("enc_savedmodel/", "dec.keras")          # or from disk
"""

import os
import zipfile

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
    self._compiled_encode = None  # made on first use: compiled_encode
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

  @property
  def compiled_encode(self):
    """`encode` as one tf.function kept with the network, so that every `encode_all` over it (the cache, its
    mirrored and jittered copies, the metrics) reuses the traces of the batch shapes it has seen; a
    tf.function made per call traced again on every call, and TensorFlow warned about the retracing."""
    if self._compiled_encode is None:
      self._compiled_encode = tf.function(self.encode)
    return self._compiled_encode

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


class _SavedModelFunction:
  """A SavedModel's serving function (or its `__call__`) as a callable, holding the loaded object.

  The object `tf.saved_model.load` returns owns the variables; a signature alone keeps only weak references
  to them, so with the object garbage-collected the first call fails ("Called a function referencing
  variables which have been deleted"). Keeping `loaded` here keeps them alive as long as the plug-in.
  """

  def __init__(self, loaded, path):
    self.loaded = loaded
    self.path = path
    signatures = getattr(loaded, "signatures", None) or {}
    if "serving_default" in signatures:
      self._fn = signatures["serving_default"]
      inputs = self._fn.structured_input_signature[1]
      if len(inputs) != 1:
        raise ValueError(f"{path}: the serving_default signature takes {len(inputs)} inputs "
                         f"({sorted(inputs)}); a plugged network takes one")
      self._input_name = next(iter(inputs))
    elif callable(loaded):
      self._fn, self._input_name = loaded, None
    else:
      raise ValueError(f"{path} holds a SavedModel with neither a serving_default signature nor __call__; "
                       "save it with tf.saved_model.save(module, path, signatures=...) or model.export(path)")

  def __call__(self, x):
    x = tf.convert_to_tensor(x, tf.float32)
    return self._fn(**{self._input_name: x}) if self._input_name else self._fn(x)

  @property
  def variables(self):
    """The loaded object's variables (a Keras export tracks them), else those the function captures."""
    found = getattr(self.loaded, "variables", None) or getattr(self._fn, "variables", None)
    if not found and hasattr(self._fn, "concrete_functions"):  # a restored tf.function (`__call__`)
      found = {id(v): v for f in self._fn.concrete_functions for v in f.variables}.values()
    return list(found or [])


def _load_one(path):
  """A .keras file or a SavedModel folder (tf.saved_model.save, or Keras's model.export) as a callable.
  Anything else is a ValueError naming the path and what was expected."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"no saved model at {path}")
  if path.endswith(".keras"):
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
      raise ValueError(f"{path} is not a Keras .keras archive (a zip written by model.save('x.keras'))")
    try:
      return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
      raise ValueError(f"cannot load the Keras model {path}: {str(e).splitlines()[0] if str(e) else e!r}") \
          from None
  if not os.path.isdir(path):
    raise ValueError(f"{path} is neither a .keras file nor a SavedModel folder")
  if not any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt")):
    raise ValueError(f"{path} is not a SavedModel folder (it holds no saved_model.pb); pass the folder "
                     "tf.saved_model.save or model.export wrote, or a .keras file")
  try:
    loaded = tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise ValueError(f"cannot load the SavedModel {path}: {str(e).splitlines()[0] if str(e) else e!r}") \
        from None
  return _SavedModelFunction(loaded, path)


def load_saved(encoder_path: str, decoder_path: str) -> FrozenAutoencoder:
  """A plug-in from two saved models: `.keras` files or SavedModel directories (TF or Keras exported).
  `paths` records where they came from (run_state.plugged_record hashes them)."""
  plugged = FrozenAutoencoder(_load_one(encoder_path), _load_one(decoder_path), name="saved")
  plugged.paths = (encoder_path, decoder_path)
  return plugged


def _first_line(e):
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def check_plugged(plugged, images: np.ndarray, latent_dim=None):
  """Before training: the plugged network takes the dataset's images and decodes its own codes back.

  images: a few images [B, H, W, C] of the dataset. Refuses (ValueError, one line) an encoder that fails on
  them or returns anything but finite float codes [B, Dim] (of `latent_dim` when given), and a decoder that
  fails on those codes or returns anything but finite images of the images' shape. Returns Dim.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  shape = "x".join(map(str, images.shape[1:]))
  try:
    z = plugged.encode(images)
  except Exception as e:  # pylint: disable=broad-except  (a user's network can raise anything)
    raise ValueError(f"the plugged encoder fails on the dataset's {shape} images: {_first_line(e)}; it must "
                     f"take images [B, {', '.join(map(str, images.shape[1:]))}] in [0, 1]") from None
  if z.shape.rank != 2 or z.shape[0] != images.shape[0]:
    raise ValueError(f"the plugged encoder returns codes of shape {z.shape.as_list()} for {images.shape[0]} "
                     "images; it must return [B, Dim] (flatten a 4-D output)")
  if latent_dim is not None and z.shape[1] != latent_dim:
    raise ValueError(f"the plugged encoder returns {z.shape[1]}-dimensional codes, expected {latent_dim}")
  if not np.all(np.isfinite(z.numpy())):
    raise ValueError(f"the plugged encoder returns non-finite codes (NaN or inf) for the dataset's {shape} "
                     "images")
  try:
    x = plugged.decode(z)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"the plugged decoder fails on the encoder's {z.shape[1]}-dimensional codes: "
                     f"{_first_line(e)}; encoder and decoder must agree on Dim") from None
  if x.shape.as_list() != images.shape.as_list():
    raise ValueError(f"the plugged decoder returns shape {x.shape.as_list()} for codes of "
                     f"{images.shape[0]} images of shape {images.shape.as_list()}; it must return images of "
                     "the dataset's shape")
  if not np.all(np.isfinite(x.numpy())):
    raise ValueError("the plugged decoder returns non-finite images (NaN or inf) for the encoder's codes")
  return int(z.shape[1])


def encode_all(plugged, images: np.ndarray, batch_size: int = 500, show_progress: bool = False,
               desc: str = "caching latents") -> np.ndarray:
  """The latent cache: plugged.encode over `images` [N, H, W, C] in batches -> float32 [N, Dim]."""
  encode = getattr(plugged, "compiled_encode", None) or tf.function(plugged.encode)
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
