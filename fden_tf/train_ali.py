"""Training ALI, the invertible network FDEN is later plugged into."""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from fden_tf import ali as ali_lib
from fden_tf import checkpoints
from fden_tf import losses
from fden_tf import progress as progress_lib


def build_ali(ali_config, image_shape, train_images=None) -> ali_lib.ALI:
  """ALI for images of `image_shape` (H, W, C); the architecture must fit H and W."""
  arch = ali_lib.get_architecture(ali_config.architecture)
  if image_shape[0] != arch.image_size or image_shape[1] != arch.image_size:
    raise ValueError(f"ALI architecture {ali_config.architecture!r} takes {arch.image_size}x{arch.image_size}"
                     f" images, the dataset has {image_shape[0]}x{image_shape[1]}")
  log_odds = None if train_images is None else ali_lib.pixel_log_odds(train_images)
  return ali_lib.ALI(ali_config.architecture, ali_config.latent_dim, image_shape[2], ali_config.width,
                     log_odds, name="ali")


def make_optimizer(c):
  return keras.optimizers.Adam(learning_rate=c.learning_rate, beta_1=c.beta_1, beta_2=c.beta_2)


def make_train_step(ali: ali_lib.ALI, d_optimizer, g_optimizer, reconstruction_weight: float):
  """The ALI step: one forward pass, then the discriminator and the encoder/generator each descend their own
  loss from gradients taken at the same point (as in ALI's code)."""
  enc, gen, disc = ali.encoder, ali.generator, ali.discriminator
  g_vars = enc.trainable_variables + gen.trainable_variables
  d_vars = disc.trainable_variables

  @tf.function
  def step(x, seed):
    batch = tf.shape(x)[0]
    posterior_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    eps = tf.random.stateless_normal([batch, ali.latent_dim], posterior_seed)
    z_prior = tf.random.stateless_normal([batch, ali.latent_dim], prior_seed)
    with tf.GradientTape(persistent=True) as tape:
      z_hat = enc.sample(x, eps, training=True)  # encoder pair (x, G_z(x))
      if reconstruction_weight:
        # One generator call for prior samples and reconstructions, so batch norm sees one batch.
        x_tilde, x_rec = tf.split(gen(tf.concat([z_prior, z_hat], 0), training=True), 2)
      else:
        x_tilde = gen(z_prior, training=True)  # decoder pair (G_x(z), z)
      logits = disc(tf.concat([x, x_tilde], 0), tf.concat([z_hat, z_prior], 0), training=True)
      logit_real, logit_fake = tf.split(logits, 2)
      d_loss = losses.ali_discriminator_loss(logit_real, logit_fake)
      g_loss = losses.ali_generator_loss(logit_real, logit_fake)
      rec = losses.pixel_reconstruction_loss(x, x_rec) if reconstruction_weight else tf.constant(0.0)
      g_total = g_loss + reconstruction_weight * rec
    d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
    g_optimizer.apply(tape.gradient(g_total, g_vars), g_vars)
    return {"d_loss": d_loss, "g_loss": g_loss, "reconstruction": rec,
            "d_real": tf.reduce_mean(tf.sigmoid(logit_real)), "d_fake": tf.reduce_mean(tf.sigmoid(logit_fake))}

  return step


def image_dataset(images: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
  """Endless shuffled batches of the training images."""
  if batch_size > len(images):
    raise ValueError(f"ALI batch size {batch_size} exceeds the {len(images)} training images")
  ds = tf.data.Dataset.from_tensor_slices(images)
  ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def reconstruction_error(ali: ali_lib.ALI, images: np.ndarray, batch_size: int = 500) -> float:
  """Held-out pixel MSE of G_x(G_z(x)) (ALI publishes no reconstruction metric; this is ours)."""
  rec = tf.function(ali.reconstruct)
  errors = [np.mean(np.square(images[i:i + batch_size] - rec(images[i:i + batch_size]).numpy()))
            * len(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
  return float(np.sum(errors) / len(images))


def train(ali: ali_lib.ALI, ali_config, images: np.ndarray, workdir: str, seed: int = 0,
          show_progress: bool = True, log_every: int = 100) -> dict:
  """Trains ALI for `ali_config.steps` steps, resuming from the newest checkpoint under `workdir`.

  Returns the last logged metrics. Checkpoints: `workdir/checkpoints` (ALI + both optimizers + step).
  """
  c = ali_config
  d_opt, g_opt = make_optimizer(c), make_optimizer(c)
  # Build the optimizers eagerly: slot variables then exist before the first compiled step (and before
  # a restore), which also avoids keras#23085 under tf.distribute.
  d_opt.build(ali.discriminator.trainable_variables)
  g_opt.build(ali.encoder.trainable_variables + ali.generator.trainable_variables)
  os.makedirs(workdir, exist_ok=True)
  step_var = tf.Variable(0, dtype=tf.int64, name="step")
  ckpt = checkpoints.checkpoint(ali=ali, d_optimizer=d_opt, g_optimizer=g_opt, step=step_var)
  manager = tf.train.CheckpointManager(ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=2)
  if manager.latest_checkpoint:
    checkpoints.restore(ckpt, manager.latest_checkpoint)
  start = int(step_var.numpy())
  if start >= c.steps:
    return {"step": start, "resumed": True}

  train_step = make_train_step(ali, d_opt, g_opt, c.reconstruction_weight)
  batches = iter(image_dataset(images, c.batch_size, seed + start))
  bar = progress_lib.Progress(c.steps, "ALI training", enabled=show_progress, unit="step", initial=start)
  log_path = os.path.join(workdir, "train_log.jsonl")
  metrics = {}
  t0 = time.time()
  with open(log_path, "a") as log:
    for step in range(start, c.steps):
      out = train_step(next(batches), tf.constant([seed, step], tf.int64))
      bar.update(1)
      if (step + 1) % log_every == 0 or step + 1 == c.steps:
        metrics = {k: float(v) for k, v in out.items()}
        metrics.update(step=step + 1, seconds=time.time() - t0)
        log.write(json.dumps(metrics) + "\n")
        log.flush()
        bar.postfix = f"d={metrics['d_loss']:.3f} g={metrics['g_loss']:.3f} rec={metrics['reconstruction']:.4f}"
      step_var.assign(step + 1)
      if (step + 1) % c.checkpoint_every == 0:
        manager.save(checkpoint_number=step + 1)
  bar.close()
  manager.save(checkpoint_number=c.steps)
  return metrics


def restore_trained(ali: ali_lib.ALI, workdir: str) -> str:
  """Loads ALI's weights (not its optimizers) from the newest checkpoint under `workdir`."""
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if latest is None:
    raise FileNotFoundError(f"no ALI checkpoint under {os.path.join(workdir, 'checkpoints')}")
  checkpoints.restore(checkpoints.checkpoint(ali=ali), latest, partial=True)
  return latest
