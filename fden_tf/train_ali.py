"""Training ALI, the invertible network FDEN is later plugged into."""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import ali as ali_lib
from fden_tf import checkpoints
from fden_tf import distribute
from fden_tf import gradients
from fden_tf import losses
from fden_tf import preflight
from fden_tf import training_loop


def build_ali(ali_config, image_shape, train_images=None) -> ali_lib.ALI:
  """ALI for images of `image_shape` (H, W, C); the architecture must fit H and W."""
  preflight.check_architecture(ali_config, image_shape)
  preflight.warn_if_codes_cannot_fill_the_latent(ali_config)
  log_odds = None if train_images is None else ali_lib.pixel_log_odds(train_images)
  return ali_lib.ALI(ali_config.architecture, ali_config.latent_dim, image_shape[2], ali_config.width,
                     log_odds, ali_config.generator_upsampling, name="ali")


def make_optimizer(c, lr_factor=1.0):
  return keras.optimizers.Adam(learning_rate=c.learning_rate * lr_factor, beta_1=c.beta_1, beta_2=c.beta_2)


def replica_inputs_fn(images, ali_config, latent_dim: int, seed: int):
  """`inputs(step, replica, replicas) -> {"x", "eps", "z_prior"}`: one replica's share of step `step`'s
  batch. The global batch is one device's: `batch_size` images of that step's slice of the epoch's
  permutation (each mirrored or not with `mirror`), the posterior noise eps and the prior draws z (and the
  instance noise at its level, `instance_noise_level`), all from (seed, step); replica r of R takes rows
  [r B / R, (r + 1) B / R) of each (whole images). Shapes as the step saw them when it drew its own batch: x
  with an unknown batch dimension, the noise with a known one (CPU kernels sum in another order when a shape
  is static, and one-device runs keep the numbers of earlier versions bit for bit)."""
  batch_size = ali_config.batch_size
  batch_of = batch_indices_fn(len(images), batch_size, seed)
  with tf.device("/cpu:0"):  # input is made on the host (tf.data), whatever the replicas' devices
    images = tf.convert_to_tensor(images, tf.float32)

  def inputs(step, replica, replicas):
    noise_seed = tf.stack([tf.constant(seed, tf.int64), step])
    posterior_seed, prior_seed = tf.unstack(tf.random.experimental.stateless_split(noise_seed, 2))
    per_replica = batch_size // replicas
    rows = slice(replica * per_replica, (replica + 1) * per_replica)
    noise = lambda seed: tf.reshape(tf.random.stateless_normal([batch_size, latent_dim], seed)[rows],
                                    [per_replica, latent_dim])
    batch = {"x": tf.gather(images, batch_of(step)[rows]), "eps": noise(posterior_seed),
             "z_prior": noise(prior_seed)}
    if ali_config.instance_noise:  # a seed of its own: the other draws stay those of a run without it
      real_seed, fake_seed = tf.unstack(tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(noise_seed, 1), 2))
      level = instance_noise_level(ali_config, step)
      pixels = lambda seed: level * tf.random.stateless_normal([batch_size, *images.shape[1:]], seed)[rows]
      batch.update(noise_real=pixels(real_seed), noise_fake=pixels(fake_seed))
    if ali_config.mirror:  # a seed of its own too
      flip = tf.random.stateless_uniform([batch_size], tf.random.experimental.stateless_fold_in(noise_seed, 2))
      flip = tf.reshape(flip[rows] < 0.5, [-1, 1, 1, 1])
      x = batch["x"]
      batch["x"] = tf.reshape(tf.where(flip, tf.reverse(x, axis=[2]), x), tf.shape(x))  # x's shape as above
    return batch

  return inputs


def instance_noise_level(ali_config, step):
  """The standard deviation of step `step`'s instance noise: `instance_noise`, or with
  `instance_noise_final` set, the straight line from `instance_noise` at step 0 to it at step `steps`."""
  if ali_config.instance_noise_final is None:
    return ali_config.instance_noise
  progress = tf.minimum(tf.cast(step, tf.float32) / ali_config.steps, 1.0)
  return ali_config.instance_noise + (ali_config.instance_noise_final - ali_config.instance_noise) * progress


def make_train_step(ali: ali_lib.ALI, d_optimizer, g_optimizer, ali_config, strategy=None, batch_spec=None):
  """The compiled ALI step `step_fn(batch, poison) -> metrics`, for a batch from `replica_inputs_fn`
  (`batch_spec`: its type spec, `StepInputs.element_spec`, to trace once for every step).

  One forward pass, then the discriminator and the encoder/generator each descend their own loss from
  gradients taken at the same point (as in ALI's code). The batch and all noise are functions of
  (seed, step), so a resumed run replays the same steps. A non-finite loss or gradient applies nothing
  (`finite` is False); `poison` is added to the losses (0, or NaN to test that guard). Under a strategy
  each replica differentiates its 1/R share of the global-batch losses, and the gradients are summed over
  replicas before the finiteness test.
  """
  enc, gen, disc = ali.encoder, ali.generator, ali.discriminator
  strategy = strategy or tf.distribute.get_strategy()
  g_vars = enc.trainable_variables + gen.trainable_variables
  d_vars = disc.trainable_variables
  weight = ali_config.reconstruction_weight

  def replica_step(batch, poison):
    replicas = distribute.replicas_in_sync()
    x, eps, z_prior = batch["x"], batch["eps"], batch["z_prior"]
    with tf.control_dependencies([distribute.check_replica(batch)]), \
        tf.GradientTape(persistent=True) as tape:
      mu, log_sigma = enc(x, training=True)
      z_hat = mu + tf.exp(log_sigma) * eps  # encoder pair (x, G_z(x)), reparameterised
      if weight:
        # One generator call for prior samples and reconstructions, so batch norm sees one batch.
        x_tilde, x_rec = tf.split(gen(tf.concat([z_prior, z_hat], 0), training=True), 2)
      else:
        x_tilde = gen(z_prior, training=True)  # decoder pair (G_x(z), z)
      x_real, x_fake = x, x_tilde
      if ali_config.instance_noise:  # the same noise level on both sides: D cannot win on pixel detail alone
        x_real, x_fake = x + batch["noise_real"], x_tilde + batch["noise_fake"]
      logits = disc(tf.concat([x_real, x_fake], 0), tf.concat([z_hat, z_prior], 0), training=True)
      logit_real, logit_fake = tf.split(logits, 2)
      d_loss = losses.ali_discriminator_loss(logit_real, logit_fake) + poison
      g_loss = losses.ali_generator_loss(logit_real, logit_fake) + poison
      rec = losses.pixel_reconstruction_loss(x, x_rec) if weight else tf.constant(0.0)
      kl = losses.gaussian_kl(mu, log_sigma) if ali_config.kl_weight else tf.constant(0.0)
      mmd = losses.mmd_imq(z_hat, z_prior) if ali_config.prior_matching_weight else tf.constant(0.0)
      moments = (losses.prior_moment_matching(mu) if ali_config.prior_moment_weight
                 else tf.constant(0.0))
      g_total = (g_loss + weight * rec + ali_config.kl_weight * kl + ali_config.prior_matching_weight * mmd
                 + ali_config.prior_moment_weight * moments)
      d_share, g_share = d_loss / replicas, g_total / replicas
    d_grads = tape.gradient(d_share, d_vars)
    g_grads = tape.gradient(g_share, g_vars)
    metrics = {"d_loss": d_loss, "g_loss": g_loss, "reconstruction": rec, "g_total": g_total,
               **({"kl": kl} if ali_config.kl_weight else {}),
               **({"prior_mmd": mmd} if ali_config.prior_matching_weight else {}),
               **({"prior_moments": moments} if ali_config.prior_moment_weight else {}),
               "d_real": tf.reduce_mean(tf.sigmoid(logit_real)),
               "d_fake": tf.reduce_mean(tf.sigmoid(logit_fake))}
    # Global gradients and global-batch means (identity on one replica).
    d_grads, g_grads, metrics = distribute.all_sum(
        (d_grads, g_grads, {k: v / replicas for k, v in metrics.items()}))
    metrics["finite"] = gradients.all_finite([metrics.pop("g_total"), metrics["d_loss"]] + d_grads + g_grads)
    return (d_grads, g_grads), metrics

  def step_fn(batch, poison):
    (d_grads, g_grads), metrics = strategy.run(replica_step, args=(batch, poison))
    metrics = distribute.local_value(strategy, metrics)  # the same on every replica

    def apply():
      distribute.apply_gradients(strategy, d_optimizer, d_grads, d_vars)
      distribute.apply_gradients(strategy, g_optimizer, g_grads, g_vars)
      return tf.constant(True)

    tf.cond(metrics["finite"], apply, lambda: tf.constant(False))
    return metrics

  signature = None if batch_spec is None else [batch_spec, tf.TensorSpec([], tf.float32)]
  # No autograph: the step has no tensor-dependent Python control flow (and traces faster without it).
  return tf.function(step_fn, input_signature=signature, autograph=False)


def batch_indices_fn(num_images: int, batch_size: int, seed: int):
  """step -> the indices of that step's batch: epoch e walks a permutation drawn from (seed, e).

  A function of the step alone (no iterator state), so resuming at step s gives the batch an
  uninterrupted run would have had. The epoch's permutation, a sort of `num_images` keys, is computed
  when the epoch changes and kept with its epoch number in one host variable (sorting at every step cost
  2.8 ms of the input thread for 20,000 images and 12 ms for 96,000). The variable is read once per call,
  so a concurrent caller (an abandoned iterator's prefetch) can cost a recomputation, never a wrong batch.
  """
  if batch_size > num_images:
    raise ValueError(f"ALI batch size {batch_size} exceeds the {num_images} training images")
  per_epoch = num_images // batch_size
  with tf.device("/cpu:0"):  # beside the input pipeline, whatever the replicas' devices
    cache = tf.Variable(tf.fill([num_images + 1], tf.constant(-1, tf.int64)), trainable=False,
                        name="epoch_and_permutation")

  def permutation(epoch):
    keys = tf.random.stateless_uniform([num_images], tf.stack([tf.constant(seed + 7919, tf.int64), epoch]))
    return tf.cast(tf.argsort(keys), tf.int64)

  def batch_of(step):
    epoch, within = step // per_epoch, step % per_epoch
    start, stop = within * batch_size, (within + 1) * batch_size
    cached = cache.read_value()

    def refresh():
      fresh = permutation(epoch)
      with tf.control_dependencies([cache.assign(tf.concat([[epoch], fresh], 0))]):
        return tf.identity(fresh[start:stop])

    return tf.cond(tf.equal(cached[0], epoch), lambda: cached[1 + start:1 + stop], refresh)

  return batch_of


def reconstruction_error(ali: ali_lib.ALI, images: np.ndarray, batch_size: int = 500) -> float:
  """Held-out pixel MSE of G_x(G_z(x)) (ALI publishes no reconstruction metric; this is ours)."""
  rec = tf.function(ali.reconstruct)
  errors = [np.mean(np.square(images[i:i + batch_size] - rec(images[i:i + batch_size]).numpy()))
            * len(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
  return float(np.sum(errors) / len(images))


def train(ali: ali_lib.ALI, ali_config, images: np.ndarray, workdir: str, seed: int = 0,
          show_progress: bool = True, log_every: int = 100, guard=training_loop.Guard(),
          nonfinite_steps=(), hooks=None, strategy=None) -> dict:
  """Trains ALI for `ali_config.steps` steps, resuming from the newest checkpoint under `workdir`.

  Returns the last logging window's mean metrics. Checkpoints: `workdir/checkpoints` (ALI, both optimizers,
  step). guard: the divergence guard's settings (training_loop.Guard). strategy: a
  `tf.distribute.Strategy` whose scope `ali` was built in (default: one device); `batch_size` is the
  global batch and must split evenly over its replicas. Only the chief writes checkpoints and logs.
  """
  c = ali_config
  strategy = strategy or tf.distribute.get_strategy()
  distribute.check_divisible(strategy, c.batch_size, "ALI batch_size")
  if strategy.num_replicas_in_sync > 1:
    distribute.synchronize_batch_norm(ali)
  with strategy.scope():
    d_opt, g_opt = make_optimizer(c, c.discriminator_lr_factor), make_optimizer(c)
    # Build the optimizers eagerly: slot variables then exist before the first compiled step (and before
    # a restore), which also avoids keras#23085 under tf.distribute.
    d_opt.build(ali.discriminator.trainable_variables)
    g_opt.build(ali.encoder.trainable_variables + ali.generator.trainable_variables)
  stage = training_loop.Stage("ALI", workdir, c.steps, c.checkpoint_every,
                              dict(ali=ali, d_optimizer=d_opt, g_optimizer=g_opt), [d_opt, g_opt],
                              log_every, guard, strategy)
  inputs = distribute.StepInputs(strategy, replica_inputs_fn(images, c, ali.latent_dim, seed), c.steps)
  compiled = make_train_step(ali, d_opt, g_opt, c, strategy, inputs.element_spec)
  step_fn = lambda step, poison: compiled(inputs(int(step)), poison)
  return training_loop.run(stage, step_fn, show_progress, nonfinite_steps, hooks)


def restore_trained(ali: ali_lib.ALI, workdir: str) -> str:
  """Loads ALI's weights (not its optimizers) from the newest checkpoint under `workdir`."""
  return checkpoints.restore_latest_weights(workdir, "ALI", ali=ali)
