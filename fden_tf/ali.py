"""ALI (Dumoulin et al. 2017): encoder G_z(x), generator G_x(z) and joint discriminator D(x, z).

The paper plugs FDEN into ALI and uses ALI's published models: the SVHN model for 32x32 inputs (Omniglot)
and the CelebA model for 64x64 inputs (Oxford Flowers, Mini-ImageNet, MS-Celeb-1M). All convolutions use
`valid` padding, which reproduces the published feature-map sizes (SVHN 32->28->13->10->4->1, CelebA
64->63->29->13->4->1). `width` multiplies every channel count so CPU runs can use a narrower model.
Latents are vectors [B, latent_dim]; the networks reshape them to 1x1 feature maps internally.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from fden_tf import config as config_lib
from fden_tf import layers


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Layer lists as (kernel, stride, channels), from ALI's Appendix A (see implementation notes)."""
  image_size: int
  leaky_slope: float
  encoder: tuple
  generator: tuple
  disc_x: tuple
  disc_z_units: int
  disc_joint_units: int


ARCHITECTURES = {
    "svhn": Architecture(
        image_size=32, leaky_slope=0.01,
        encoder=((5, 1, 32), (4, 2, 64), (4, 1, 128), (4, 2, 256), (4, 1, 512), (1, 1, 512)),
        generator=((4, 1, 256), (4, 2, 128), (4, 1, 64), (4, 2, 32), (5, 1, 32), (1, 1, 32)),
        disc_x=((5, 1, 32), (4, 2, 64), (4, 1, 128), (4, 2, 256), (4, 1, 512)),
        disc_z_units=512, disc_joint_units=1024),
    "celeba": Architecture(
        image_size=64, leaky_slope=0.02,
        encoder=((2, 1, 64), (7, 2, 128), (5, 2, 256), (7, 2, 256), (4, 1, 512)),
        generator=((4, 1, 512), (7, 2, 256), (5, 2, 256), (7, 2, 128), (2, 1, 64)),
        disc_x=((2, 1, 64), (7, 2, 128), (5, 2, 256), (7, 2, 256), (4, 1, 512)),
        disc_z_units=1024, disc_joint_units=2048),
}

BN_MOMENTUM = 0.95  # ALI's batch-norm moving average
DROPOUT = 0.2  # ALI's discriminator dropout


def get_architecture(name: str) -> Architecture:
  try:
    return ARCHITECTURES[name]
  except KeyError:
    raise ValueError(f"unknown ALI architecture {name!r}; choose one of {sorted(ARCHITECTURES)}") from None


def architecture_for_image_size(image_size: int) -> str:
  """The paper's choice: SVHN model for 32x32 images, CelebA model for 64x64 ones."""
  for name, arch in ARCHITECTURES.items():
    if arch.image_size == image_size:
      return name
  raise ValueError(f"no ALI architecture for {image_size}x{image_size} images; use 32 or 64")


def _channels(c, width):
  return max(1, int(round(c * width)))


def _init():
  return keras.initializers.RandomNormal(stddev=0.01)  # ALI: N(0, 0.01) weights, zero biases


class Encoder(keras.Model):
  """G_z(x): images [B, H, W, C] -> (mu, log_sigma), each [B, latent_dim]; `sample` adds mu + sigma * eps."""

  def __init__(self, arch: Architecture, latent_dim: int, width: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim
    self.blocks = []
    for kernel, stride, channels in arch.encoder:
      self.blocks.append((layers.Conv2D(_channels(channels, width), kernel, stride, "valid",
                                        use_bias=False, kernel_initializer=_init()),
                          layers.BatchNormalization(momentum=BN_MOMENTUM),
                          keras.layers.LeakyReLU(arch.leaky_slope)))
    self.head = layers.Conv2D(2 * latent_dim, 1, 1, "valid", kernel_initializer=_init())
    self.flatten = keras.layers.Flatten()

  def call(self, x, training=False):
    h = x
    for conv, bn, act in self.blocks:
      h = act(bn(conv(h), training=training))
    mu, log_sigma = tf.split(self.flatten(self.head(h)), 2, axis=-1)
    return mu, log_sigma

  def sample(self, x, noise, training=False):
    """Reparameterised sample z = mu + sigma * noise; noise [B, latent_dim]."""
    mu, log_sigma = self(x, training=training)
    return mu + tf.exp(log_sigma) * noise


class ResizeConv2D(keras.layers.Layer):
  """Nearest-neighbour resize to `size` x `size`, then a 3x3 stride-1 `same` convolution (Odena et al. 2016,
  "Deconvolution and checkerboard artifacts"): upsampling in which every output pixel gets the same number
  of kernel taps, so it cannot paint a checkerboard the way a strided transposed convolution whose kernel
  the stride does not divide does."""

  def __init__(self, filters: int, size: int, **kwargs):
    super().__init__(**kwargs)
    self.size = size
    self.conv = layers.Conv2D(filters, 3, 1, "same", use_bias=False, kernel_initializer=_init())

  def build(self, input_shape):
    self.conv.build((input_shape[0], self.size, self.size, input_shape[-1]))

  def call(self, x):
    return self.conv(tf.image.resize(x, (self.size, self.size), method="nearest"))


class Generator(keras.Model):
  """G_x(z): latents [B, latent_dim] -> images [B, H, W, channels] in (0, 1). `upsampling` "transposed" is
  ALI's; "resize" swaps each strided transposed convolution for a `ResizeConv2D` to the same size."""

  def __init__(self, arch: Architecture, latent_dim: int, channels: int, width: float = 1.0,
               pixel_log_odds=None, upsampling: str = "transposed", **kwargs):
    super().__init__(**kwargs)
    if upsampling not in config_lib.GENERATOR_UPSAMPLINGS:
      raise ValueError(f"unknown generator upsampling {upsampling!r}; choose one of "
                       f"{config_lib.GENERATOR_UPSAMPLINGS}")
    self.latent_dim = latent_dim
    self.reshape = keras.layers.Reshape((1, 1, latent_dim))
    self.blocks = []
    size = 1  # the feature map's side, grown as a valid transposed convolution grows it
    for kernel, stride, ch in arch.generator:
      size = (size - 1) * stride + kernel
      filters = _channels(ch, width)
      if upsampling == "resize" and stride > 1:
        upsample = ResizeConv2D(filters, size)
      else:
        layer_cls = layers.Conv2DTranspose if (kernel, stride) != (1, 1) else layers.Conv2D
        upsample = layer_cls(filters, kernel, stride, "valid", use_bias=False, kernel_initializer=_init())
      self.blocks.append((upsample, layers.BatchNormalization(momentum=BN_MOMENTUM),
                          keras.layers.LeakyReLU(arch.leaky_slope)))
    self.to_pixels = layers.Conv2D(channels, 1, 1, "valid", use_bias=False, kernel_initializer=_init())
    # ALI's last bias is per pixel, initialised to the data's pixel log-odds, so the untrained generator
    # already outputs the mean image.
    size = arch.image_size
    init = np.zeros((size, size, channels), np.float32) if pixel_log_odds is None else pixel_log_odds
    self.pixel_bias = self.add_weight(shape=(size, size, channels), name="pixel_bias",
                                      initializer=keras.initializers.Constant(init))

  def call(self, z, training=False):
    h = self.reshape(z)
    for conv, bn, act in self.blocks:
      h = act(bn(conv(h), training=training))
    return tf.sigmoid(self.to_pixels(h) + self.pixel_bias)


class Discriminator(keras.Model):
  """D(x, z): the joint discriminator -> logits [B]. Dropout 0.2 on the input of every layer; batch norm on
  every x-convolution but the first."""

  def __init__(self, arch: Architecture, width: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    slope = arch.leaky_slope
    self.x_blocks = []
    for i, (kernel, stride, channels) in enumerate(arch.disc_x):
      bn = layers.BatchNormalization(momentum=BN_MOMENTUM) if i > 0 else None
      self.x_blocks.append((keras.layers.Dropout(DROPOUT),
                            layers.Conv2D(_channels(channels, width), kernel, stride, "valid",
                                          use_bias=bn is None, kernel_initializer=_init()),
                            bn, keras.layers.LeakyReLU(slope)))
    z_units = _channels(arch.disc_z_units, width)
    joint_units = _channels(arch.disc_joint_units, width)
    self.z_blocks = [(keras.layers.Dropout(DROPOUT), keras.layers.Dense(z_units, kernel_initializer=_init()),
                      keras.layers.LeakyReLU(slope)) for _ in range(2)]
    self.joint_blocks = [(keras.layers.Dropout(DROPOUT),
                          keras.layers.Dense(joint_units, kernel_initializer=_init()),
                          keras.layers.LeakyReLU(slope)) for _ in range(2)]
    self.logit_dropout = keras.layers.Dropout(DROPOUT)
    self.logit = keras.layers.Dense(1, kernel_initializer=_init())
    self.flatten = keras.layers.Flatten()

  def call(self, x, z, training=False):
    hx = x
    for dropout, conv, bn, act in self.x_blocks:
      hx = conv(dropout(hx, training=training))
      hx = act(bn(hx, training=training) if bn is not None else hx)
    hz = z
    for dropout, dense, act in self.z_blocks:
      hz = act(dense(dropout(hz, training=training)))
    h = tf.concat([self.flatten(hx), hz], axis=-1)
    for dropout, dense, act in self.joint_blocks:
      h = act(dense(dropout(h, training=training)))
    return tf.squeeze(self.logit(self.logit_dropout(h, training=training)), axis=-1)


class ALI(keras.Model):
  """The three ALI networks together. `encode` (posterior mean) and `decode` make it a plug-in network."""

  def __init__(self, architecture="svhn", latent_dim=256, channels=1, width=1.0, pixel_log_odds=None,
               generator_upsampling="transposed", **kwargs):
    super().__init__(**kwargs)
    arch = get_architecture(architecture)
    self.architecture = architecture
    self.image_shape = (arch.image_size, arch.image_size, channels)
    self.latent_dim = latent_dim
    self.encoder = Encoder(arch, latent_dim, width, name="encoder")
    self.generator = Generator(arch, latent_dim, channels, width, pixel_log_odds, generator_upsampling,
                               name="generator")
    self.discriminator = Discriminator(arch, width, name="discriminator")
    # Build every variable now so checkpoints restore and optimizers can be built before the first step.
    x = tf.zeros((1,) + self.image_shape)
    z = tf.zeros((1, latent_dim))
    self.encoder(x)
    self.generator(z)
    self.discriminator(x, z)

  def encode(self, x):
    """Deterministic code for downstream use: the posterior mean mu of G_z(x), inference mode."""
    return self.encoder(x, training=False)[0]

  def posterior_variance(self, x):
    """sigma^2 of G_z(x)'s posterior, inference mode: the noise around `encode(x)` that reconstructions see
    in training."""
    return tf.exp(2.0 * self.encoder(x, training=False)[1])

  def decode(self, z):
    return self.generator(z, training=False)

  def reconstruct(self, x):
    return self.decode(self.encode(x))


def pixel_log_odds(images: np.ndarray) -> np.ndarray:
  """Per-pixel log-odds of the mean training image, clipped to [1e-7, 1 - 1e-7] as in ALI's code."""
  p = np.clip(images.mean(axis=0), 1e-7, 1 - 1e-7)
  return np.log(p / (1 - p)).astype(np.float32)
