"""Training ALI, the invertible network FDEN is later plugged into."""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import ali as ali_lib
from fden_tf import checkpoints
from fden_tf import gradients
from fden_tf import losses
from fden_tf import preflight
from fden_tf import training_loop


def build_ali(ali_config, image_shape, train_images=None) -> ali_lib.ALI:
  """ALI for images of `image_shape` (H, W, C); the architecture must fit H and W."""
  preflight.check_architecture(ali_config, image_shape)
  log_odds = None if train_images is None else ali_lib.pixel_log_odds(train_images)
  return ali_lib.ALI(ali_config.architecture, ali_config.latent_dim, image_shape[2], ali_config.width,
                     log_odds, name="ali")


def make_optimizer(c):
  return keras.optimizers.Adam(learning_rate=c.learning_rate, beta_1=c.beta_1, beta_2=c.beta_2)


def make_train_step(ali: ali_lib.ALI, d_optimizer, g_optimizer, images, ali_config, seed: int):
  """The compiled ALI step `step_fn(step, poison) -> metrics`.

  One forward pass, then the discriminator and the encoder/generator each descend their own loss from
  gradients taken at the same point (as in ALI's code). The batch and all noise are functions of
  (seed, step), so a resumed run replays the same steps. A non-finite loss or gradient applies nothing
  (`finite` is False); `poison` is added to the losses (0, or NaN to test that guard).
  """
  enc, gen, disc = ali.encoder, ali.generator, ali.discriminator
  g_vars = enc.trainable_variables + gen.trainable_variables
  d_vars = disc.trainable_variables
  weight = ali_config.reconstruction_weight
  batch_of = batch_indices_fn(len(images), ali_config.batch_size, seed)
  images = tf.convert_to_tensor(images, tf.float32)

  @tf.function
  def step_fn(step, poison):
    x = tf.gather(images, batch_of(step))
    noise_seed = tf.stack([tf.constant(seed, tf.int64), step])
    posterior_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(noise_seed, 2))
    eps = tf.random.stateless_normal([ali_config.batch_size, ali.latent_dim], posterior_seed)
    z_prior = tf.random.stateless_normal([ali_config.batch_size, ali.latent_dim], prior_seed)
    with tf.GradientTape(persistent=True) as tape:
      z_hat = enc.sample(x, eps, training=True)  # encoder pair (x, G_z(x))
      if weight:
        # One generator call for prior samples and reconstructions, so batch norm sees one batch.
        x_tilde, x_rec = tf.split(gen(tf.concat([z_prior, z_hat], 0), training=True), 2)
      else:
        x_tilde = gen(z_prior, training=True)  # decoder pair (G_x(z), z)
      logits = disc(tf.concat([x, x_tilde], 0), tf.concat([z_hat, z_prior], 0), training=True)
      logit_real, logit_fake = tf.split(logits, 2)
      d_loss = losses.ali_discriminator_loss(logit_real, logit_fake) + poison
      g_loss = losses.ali_generator_loss(logit_real, logit_fake) + poison
      rec = losses.pixel_reconstruction_loss(x, x_rec) if weight else tf.constant(0.0)
      g_total = g_loss + weight * rec
    d_grads = tape.gradient(d_loss, d_vars)
    g_grads = tape.gradient(g_total, g_vars)
    finite = gradients.all_finite([d_loss, g_total] + d_grads + g_grads)

    def apply():
      d_optimizer.apply(d_grads, d_vars)
      g_optimizer.apply(g_grads, g_vars)
      return tf.constant(True)

    tf.cond(finite, apply, lambda: tf.constant(False))
    return {"d_loss": d_loss, "g_loss": g_loss, "reconstruction": rec,
            "d_real": tf.reduce_mean(tf.sigmoid(logit_real)), "d_fake": tf.reduce_mean(tf.sigmoid(logit_fake)),
            "finite": finite}

  return step_fn


def batch_indices_fn(num_images: int, batch_size: int, seed: int):
  """step -> the indices of that step's batch: epoch e walks a permutation drawn from (seed, e).

  A pure function of the step (no iterator state), so resuming at step s gives the batch an
  uninterrupted run would have had.
  """
  if batch_size > num_images:
    raise ValueError(f"ALI batch size {batch_size} exceeds the {num_images} training images")
  per_epoch = num_images // batch_size

  def batch_of(step):
    epoch, within = step // per_epoch, step % per_epoch
    keys = tf.random.stateless_uniform([num_images], tf.stack([tf.constant(seed + 7919, tf.int64), epoch]))
    return tf.argsort(keys)[within * batch_size:(within + 1) * batch_size]

  return batch_of


def reconstruction_error(ali: ali_lib.ALI, images: np.ndarray, batch_size: int = 500) -> float:
  """Held-out pixel MSE of G_x(G_z(x)) (ALI publishes no reconstruction metric; this is ours)."""
  rec = tf.function(ali.reconstruct)
  errors = [np.mean(np.square(images[i:i + batch_size] - rec(images[i:i + batch_size]).numpy()))
            * len(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
  return float(np.sum(errors) / len(images))


def train(ali: ali_lib.ALI, ali_config, images: np.ndarray, workdir: str, seed: int = 0,
          show_progress: bool = True, log_every: int = 100, guard=training_loop.Guard(),
          nonfinite_steps=(), hooks=None) -> dict:
  """Trains ALI for `ali_config.steps` steps, resuming from the newest checkpoint under `workdir`.

  Returns the last logging window's mean metrics. Checkpoints: `workdir/checkpoints` (ALI, both optimizers,
  step). guard: the divergence guard's settings (training_loop.Guard).
  """
  c = ali_config
  d_opt, g_opt = make_optimizer(c), make_optimizer(c)
  # Build the optimizers eagerly: slot variables then exist before the first compiled step (and before
  # a restore), which also avoids keras#23085 under tf.distribute.
  d_opt.build(ali.discriminator.trainable_variables)
  g_opt.build(ali.encoder.trainable_variables + ali.generator.trainable_variables)
  stage = training_loop.Stage("ALI", workdir, c.steps, c.checkpoint_every,
                              dict(ali=ali, d_optimizer=d_opt, g_optimizer=g_opt), [d_opt, g_opt],
                              log_every, guard)
  step_fn = make_train_step(ali, d_opt, g_opt, images, c, seed)
  return training_loop.run(stage, step_fn, show_progress, nonfinite_steps, hooks)


def restore_trained(ali: ali_lib.ALI, workdir: str) -> str:
  """Loads ALI's weights (not its optimizers) from the newest checkpoint under `workdir`."""
  return checkpoints.restore_latest_weights(workdir, "ALI", ali=ali)
