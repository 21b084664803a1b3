"""FDEN's networks (Section 3, Appendix B Table 2): Disentangler, Entangler and the statisticians network.

Every block is a stack of fully connected layers; the first has batch norm, every layer has dropout 0.2 on
its input, hidden layers use leaky ReLU (slope 0.01), outputs are linear, weights start from
TruncatedNormal(0, 0.001). `Dim` is the plugged network's latent size. The alignment network is the
prototypical head in `losses.prototype_logits`: it has no weights of its own; it aligns f_ide through L_C.
"""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import gradients

# Table 2, hidden widths of each block ("dim" marks the output of size Dim, "2dim" of size 2 * Dim).
DISENTANGLER_DEC = (512, 512, 512, "2dim")
DISENTANGLER_FACTOR = (512, 512, "dim")  # D_ide and D_sty
STATISTICIAN = (1024, 256, 64, 1)
ENTANGLER_FACTOR = (256, 256, "dim")  # E_ide and E_sty
ENTANGLER_ENC = (512, 512, 512, "dim")


class MLP(keras.layers.Layer):
  """Fully connected stack in Table 2's pattern: dropout -> dense -> (batch norm on the first) -> leaky ReLU,
  the last layer linear."""

  def __init__(self, units, dropout=0.2, leaky_slope=0.01, init_stddev=0.001, **kwargs):
    super().__init__(**kwargs)
    init = keras.initializers.TruncatedNormal(mean=0.0, stddev=init_stddev)
    self.dropouts = [keras.layers.Dropout(dropout) for _ in units]
    self.denses = [keras.layers.Dense(u, kernel_initializer=init) for u in units]
    self.batch_norm = keras.layers.BatchNormalization()
    self.activation = keras.layers.LeakyReLU(leaky_slope)

  def call(self, x, training=False):
    h = x
    last = len(self.denses) - 1
    for i, (dropout, dense) in enumerate(zip(self.dropouts, self.denses)):
      h = dense(dropout(h, training=training))
      if i == 0:
        h = self.batch_norm(h, training=training)
      if i < last:
        h = self.activation(h)
    return h


def _widths(spec, dim, scale):
  out = []
  for u in spec:
    if u == "dim":
      out.append(dim)
    elif u == "2dim":
      out.append(2 * dim)
    elif u == 1:
      out.append(1)  # the statistician's scalar output never scales
    else:
      out.append(max(4, int(round(u * scale))))
  return out


class Disentangler(keras.Model):
  """z [B, Dim] -> z_dec = D_dec(z) [B, 2 Dim] -> (f_ide = D_ide(z_dec) [B, Dim], f_sty = D_sty(z_dec)
  [B, style_dim]); style_dim is Dim in the paper."""

  def __init__(self, dim, hidden_scale=1.0, style_dim=None, **mlp_kwargs):
    super().__init__()
    self.dec = MLP(_widths(DISENTANGLER_DEC, dim, hidden_scale), name="D_dec", **mlp_kwargs)
    self.ide = MLP(_widths(DISENTANGLER_FACTOR, dim, hidden_scale), name="D_ide", **mlp_kwargs)
    self.sty = MLP(_widths(DISENTANGLER_FACTOR, style_dim or dim, hidden_scale), name="D_sty", **mlp_kwargs)

  def call(self, z, training=False):
    z_dec = self.dec(z, training=training)
    return self.ide(z_dec, training=training), self.sty(z_dec, training=training)


class Entangler(keras.Model):
  """(f_ide, f_sty) -> z~ = E_enc(E_ide(f_ide) (+) E_sty(f_sty)), [B, Dim]; (+) is concatenation."""

  def __init__(self, dim, hidden_scale=1.0, **mlp_kwargs):
    super().__init__()
    self.ide = MLP(_widths(ENTANGLER_FACTOR, dim, hidden_scale), name="E_ide", **mlp_kwargs)
    self.sty = MLP(_widths(ENTANGLER_FACTOR, dim, hidden_scale), name="E_sty", **mlp_kwargs)
    self.enc = MLP(_widths(ENTANGLER_ENC, dim, hidden_scale), name="E_enc", **mlp_kwargs)

  def call(self, f_ide, f_sty, training=False, style_training=None):
    """style_training: E_sty's mode where it differs from the rest's (None: `training`). The neutral-style
    term feeds an all-zero f_sty in inference mode: in training mode E_sty's batch norm would normalise a
    constant batch to nothing and drag its moving statistics towards it."""
    style_training = training if style_training is None else style_training
    h = tf.concat([self.ide(f_ide, training=training), self.sty(f_sty, training=style_training)], axis=-1)
    return self.enc(h, training=training)


class Statistician(keras.Model):
  """F_mi(f_ide, f_sty) -> T [B], the Donsker-Varadhan critic of Eq. 4, on the concatenated factors."""

  def __init__(self, hidden_scale=1.0, **mlp_kwargs):
    super().__init__()
    self.mlp = MLP(_widths(STATISTICIAN, 0, hidden_scale), name="F_mi", **mlp_kwargs)

  def call(self, f_ide, f_sty, training=False):
    return tf.squeeze(self.mlp(tf.concat([f_ide, f_sty], axis=-1), training=training), axis=-1)


class LatentStatistics(keras.layers.Layer):
  """Mean and scale of the plugged network's codes, frozen (non-trainable) and checkpointed.

  Beyond the paper (`FDENConfig.standardize_latents`): FDEN works on (z - mean) / scale and the Entangler's
  output is mapped back, so the terms measured in z (L_R of Eq. 3, the identity swap, clean decoding) are
  in units of the codes' spread and their weights mean the same for any plugged network, whatever the
  scale of its codes. `per_dimension`: each coordinate to unit spread; otherwise one scale for all
  (`FDENConfig.standardization = "global"`: the RMS spread over coordinates), which keeps the geometry of
  z, so that a coordinate that barely varies is not blown up to the size of one that carries the image."""

  def __init__(self, dim, per_dimension=True, **kwargs):
    super().__init__(**kwargs)
    self.per_dimension = per_dimension
    self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
    self.scale = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="scale")

  def set(self, latents, min_scale=1e-3):
    """Statistics of codes [N, Dim]; per dimension, a dimension that barely varies keeps a scale of at
    least `min_scale` times the largest, so it is not blown up."""
    latents = np.asarray(latents, np.float64)
    if self.per_dimension:
      scale = latents.std(axis=0)
      scale = np.maximum(scale, min_scale * scale.max())
    else:
      scale = np.full(latents.shape[1], np.sqrt(latents.var(axis=0).mean()))
    self.mean.assign(latents.mean(axis=0).astype(np.float32))
    self.scale.assign(scale.astype(np.float32))

  def standardize(self, z):
    return (tf.convert_to_tensor(z, tf.float32) - self.mean) / self.scale

  def unstandardize(self, z):
    return tf.convert_to_tensor(z, tf.float32) * self.scale + self.mean


class FDEN(keras.Model):
  """The plug-in: Disentangler, Entangler and statisticians network for latents of size `dim`.

  `call(z)` returns (f_ide, f_sty, z~). `statistician_outputs(f_ide, f_sty, permutation)` returns the
  statistician's outputs on joint and shuffled pairs, behind the gradient reversal layer.

  standardize: None (the paper), "per_dimension" (or True) or "global": the Disentangler reads standardized
  codes and the Entangler writes them (`LatentStatistics`, set from the latent cache with
  `set_latent_statistics`); `call`, `disentangle` and `entangle` take and give the plugged network's own
  codes either way.
  style_dim: the size of f_sty (beyond the paper, `FDENConfig.style_dim`); None: Dim, as the paper.
  """

  def __init__(self, dim, hidden_scale=1.0, dropout=0.2, leaky_slope=0.01, init_stddev=0.001,
               grl_lambda=1.0, standardize=None, style_dim=None, **kwargs):
    if standardize not in (None, False, True, "per_dimension", "global"):  # before any network is built
      raise ValueError(f"standardize must be None, 'per_dimension' or 'global', got {standardize!r}")
    super().__init__(**kwargs)
    mlp_kwargs = dict(dropout=dropout, leaky_slope=leaky_slope, init_stddev=init_stddev)
    self.dim = dim
    if style_dim is not None and style_dim < 1:
      raise ValueError(f"style_dim must be a positive size of f_sty (or None for Dim), got {style_dim}")
    self.style_dim = style_dim or dim
    self.grl_lambda = grl_lambda
    self.disentangler = Disentangler(dim, hidden_scale, self.style_dim, **mlp_kwargs)
    self.entangler = Entangler(dim, hidden_scale, **mlp_kwargs)
    self.statistician = Statistician(hidden_scale, **mlp_kwargs)
    # Create every variable now (checkpoint restores and optimizer.build need them before a first step).
    f_ide, f_sty = self.disentangler(tf.zeros((2, dim)))
    self.entangler(f_ide, f_sty)
    self.statistician(f_ide, f_sty)
    # Created last, so its two variables follow every network's in checkpoints (and only when used, so
    # runs written without it keep their checkpoint layout).
    self.latent_statistics = LatentStatistics(dim, per_dimension=standardize != "global",
                                              name="latent_statistics") if standardize else None
    self.built = True

  @classmethod
  def from_config_section(cls, dim, fden_config):
    c = fden_config
    return cls(dim, hidden_scale=c.hidden_scale, dropout=c.dropout, leaky_slope=c.leaky_slope,
               init_stddev=c.init_stddev, grl_lambda=c.grl_lambda,
               standardize=c.standardization if c.standardize_latents else None,
               style_dim=c.style_dim)

  def set_latent_statistics(self, latents):
    """Sets the standardization from the cached codes [N, Dim] (no-op without `standardize`)."""
    if self.latent_statistics is not None:
      self.latent_statistics.set(latents)

  def standardize(self, z):
    return z if self.latent_statistics is None else self.latent_statistics.standardize(z)

  def unstandardize(self, z):
    return z if self.latent_statistics is None else self.latent_statistics.unstandardize(z)

  def call(self, z, training=False):
    f_ide, f_sty = self.disentangler(self.standardize(z), training=training)
    return f_ide, f_sty, self.unstandardize(self.entangler(f_ide, f_sty, training=training))

  def disentangle(self, z):
    return self.disentangler(self.standardize(z), training=False)

  def entangle(self, f_ide, f_sty):
    return self.unstandardize(self.entangler(f_ide, f_sty, training=False))

  def statistician_outputs(self, f_ide, f_sty, permutation, training=False, pool=None):
    """T on joint pairs (f_ide_i, f_sty_i) and on marginal pairs (f_ide_i, pool(f_sty)[perm(i)]), each [B].

    Both factors pass the GRL first. Joint and marginal pairs go through F_mi as one batch so its batch
    norm normalises both with the same statistics. pool: the f_sty that marginal pairs are drawn from,
    as a function of this batch's (default: this batch's own). Under tf.distribute training passes
    `distribute.all_gather`, so marginal pairs cross replicas as one device pairs them across its batch;
    gathering is linear, so the reversed gradient of a borrowed f_sty flows back to its replica.
    """
    f_ide = gradients.gradient_reversal(f_ide, self.grl_lambda)
    f_sty = gradients.gradient_reversal(f_sty, self.grl_lambda)
    f_sty_marginal = tf.gather(f_sty if pool is None else pool(f_sty), permutation)
    t = self.statistician(tf.concat([f_ide, f_ide], 0), tf.concat([f_sty, f_sty_marginal], 0),
                          training=training)
    return tf.split(t, 2)

  @property
  def frozen_statistics(self):
    """The standardization's variables (empty without it): inference needs them beside D and E."""
    return [] if self.latent_statistics is None else list(self.latent_statistics.variables)

  @property
  def theta(self):
    """Variables both L_u = alpha L_R + beta L_C and L_M reach: the Disentangler's (Eq. 7's theta)."""
    return self.disentangler.trainable_variables

  @property
  def phi(self):
    return self.entangler.trainable_variables

  @property
  def xi(self):
    return self.statistician.trainable_variables
