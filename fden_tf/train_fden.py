"""Training FDEN on the cached codes of a frozen plugged network (Section 3.3)."""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import checkpoints
from fden_tf import distribute
from fden_tf import fden as fden_lib
from fden_tf import gradients
from fden_tf import losses
from fden_tf import training_loop
from fden_tf.data import episodes as episodes_lib


# The terms beyond the paper's Eq. 6, by their metric name: the FDENConfig field that weights each.
BEYOND_PAPER_WEIGHTS = {"l_swap": "swap_weight", "l_style_confusion": "style_confusion_weight",
                        "l_identity_swap": "identity_swap_weight", "l_style_rate": "style_bottleneck_weight",
                        "l_clean_decoding": "clean_decoding_weight",
                        "l_identity_invariance": "identity_invariance_weight",
                        "l_neutral_style": "neutral_style_weight"}


def make_optimizer(c):
  return keras.optimizers.Adam(learning_rate=c.learning_rate, beta_1=c.beta_1, beta_2=c.beta_2)


def cosine_decay(step: int, steps: int) -> float:
  """The "cosine" schedule's factor on the learning rate at episodic step `step` of `steps`: 1 at step 0,
  falling on a half cosine toward 0 at `steps`."""
  return 0.5 * (1.0 + np.cos(np.pi * step / steps))


def replica_inputs_fn(sampler: episodes_lib.EpisodeSampler, latents, episodes: int, seed: int,
                      style_dim: int = 0):
  """`inputs(step, replica, replicas) -> {"z", "marginal"}`: one replica's share of step `step`'s batch.

  The global batch is what one device trains on: `episodes` episodes drawn from (seed, step), their codes
  z [E * C * (K + Q), Dim], and the shuffle that pairs each sample with another one's f_sty for the
  product of marginals of Eq. 4. Replica r of R takes episodes [r E / R, (r + 1) E / R) (whole episodes)
  with their rows of the shuffle, which index the global batch: "marginal" [E / R * C * (K + Q)].
  style_dim: if not 0, also "style_noise" [E / R * C * (K + Q), style_dim], unit Gaussian noise for the
  style bottleneck (FDENConfig.style_bottleneck_weight), from a seed of its own (the other draws stay the
  same).
  """
  with tf.device("/cpu:0"):  # input is made on the host (tf.data), whatever the replicas' devices
    latents = tf.convert_to_tensor(latents, tf.float32)
  n = episodes * sampler.way * (sampler.shot + sampler.query)

  def inputs(step, replica, replicas):
    seed_t = tf.stack([tf.constant(seed, tf.int64), step])
    episode_seed, shuffle_seed = tf.unstack(tf.random.experimental.stateless_split(seed_t, 2))
    indices = sampler.sample(episode_seed, episodes)  # [E, C, K + Q]
    permutation = tf.argsort(tf.random.stateless_uniform([n], shuffle_seed))
    per_replica, rows = episodes // replicas, n // replicas
    mine = tf.reshape(indices[replica * per_replica:(replica + 1) * per_replica], [rows])  # static shapes
    share = lambda t: tf.reshape(t[replica * rows:(replica + 1) * rows], [rows, *t.shape[1:]])  # static shape
    batch = {"z": tf.gather(latents, mine), "marginal": share(permutation)}
    if style_dim:  # a seed of its own: the other draws stay those of a run without it
      batch["style_noise"] = share(tf.random.stateless_normal(
          [n, style_dim], tf.random.experimental.stateless_fold_in(seed_t, 1)))
    return batch

  return inputs


def refit_inputs_fn(latents, batch_size: int, seed: int):
  """`inputs(step, replica, replicas) -> {"z"}`: one replica's share of step `step`'s Entangler-refit batch,
  `batch_size` codes drawn uniformly (with replacement) from (seed, step), a draw of its own (folded with 2:
  the episodic steps' draws use the seed unfolded and folded with 1)."""
  with tf.device("/cpu:0"):
    latents = tf.convert_to_tensor(latents, tf.float32)
  n = int(latents.shape[0])

  def inputs(step, replica, replicas):
    seed_t = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), step]), 2)
    rows = batch_size // replicas
    indices = tf.random.stateless_uniform([batch_size], seed_t, minval=0, maxval=n, dtype=tf.int64)
    return {"z": tf.gather(latents, indices[replica * rows:(replica + 1) * rows])}

  return inputs


def donsker_varadhan_share(t_joint, t_marginal):
  """Eq. 4 on a replica: its mean of T on joint pairs minus log E_marginal[exp(T)] over the *global*
  batch. Averaged over the replicas (all_sum of share / R) this is Eq. 4 on the global batch exactly;
  on one replica it is `losses.donsker_varadhan_eq4`."""
  if distribute.replicas_in_sync() == 1:
    return losses.donsker_varadhan_eq4(t_joint, t_marginal)
  return tf.reduce_mean(t_joint) - distribute.log_mean_exp(t_marginal)


def make_train_step(model: fden_lib.FDEN, optimizer, sampler: episodes_lib.EpisodeSampler, fden_config,
                    strategy=None, batch_spec=None):
  """The compiled FDEN step `step_fn(batch, poison) -> metrics`, for a batch from `replica_inputs_fn`
  (`batch_spec`: its type spec, `StepInputs.element_spec`, to trace once for every step).

  Eq. 7 needs the norms of two gradients of the same variables, so the tape gives them separately
  (per-loss gradients, not a tf.custom_gradient: a custom gradient sees only the gradient flowing through
  it, never the other loss's): g_u of alpha L_R + beta L_C and g_m of -gamma L_M, which reaches the
  Disentangler only through the GRL and so arrives as +gamma lambda dL_M/dtheta.

  Under a strategy each replica differentiates its 1/R share of the global-batch losses; the shares'
  gradients are summed over replicas *before* Eq. 7, so its norms are those of the global gradients, as
  on one device, and the finiteness test sees the same all-reduced values on every replica.
  """
  c = fden_config
  strategy = strategy or tf.distribute.get_strategy()
  way, shot, query = sampler.way, sampler.shot, sampler.query
  theta, phi, xi = model.theta, model.phi, model.xi
  variables = theta + phi + xi

  def swap_term(f_ide, f_sty):
    """Swap consistency: each sample's f_ide with the f_sty of the sample shot + query rows on (the same
    place in the neighbouring class of the episode, so another class), entangled and disentangled again."""
    partner = tf.roll(f_sty, shift=shot + query, axis=0)
    g_ide, g_sty = model.disentangler(model.entangler(f_ide, partner, training=True), training=True)
    return losses.swap_consistency_loss(f_ide, partner, g_ide, g_sty)

  def beyond_paper_terms(z, f_ide, f_sty, f_sty_sent, episodes):
    """The terms beyond Eq. 6 whose weight is not 0 (none in the paper preset), by metric name."""
    grouped = lambda f: tf.reshape(f, [episodes, way, shot + query, -1])
    terms = {}
    if c.swap_weight:
      terms["l_swap"] = swap_term(f_ide, f_sty)
    if c.style_confusion_weight:
      terms["l_style_confusion"] = losses.style_confusion_loss(*episodes_lib.split_episode(grouped(f_sty), shot))
    if c.identity_swap_weight:
      class_mate = episodes_lib.same_class_partner(f_ide, episodes, way, shot + query)
      terms["l_identity_swap"] = losses.identity_swap_loss(
          z, model.entangler(class_mate, f_sty_sent, training=True))
    if c.identity_invariance_weight:
      terms["l_identity_invariance"] = losses.identity_invariance_loss(grouped(f_ide))
    if c.neutral_style_weight:  # E(f_ide, 0): the identity decoded with the style the bottleneck pulls f_sty to
      neutral = model.entangler(f_ide, tf.zeros_like(f_sty), training=True, style_training=False)
      terms["l_neutral_style"] = losses.neutral_style_loss(
          episodes_lib.same_class_partner(z, episodes, way, shot + query), neutral)
    if c.style_bottleneck_weight:
      terms["l_style_rate"] = losses.style_rate(f_sty)
    if c.clean_decoding_weight:  # the Entangler alone: the factors are what the other terms make them
      terms["l_clean_decoding"] = losses.reconstruction_loss_eq3(
          z, model.entangler(tf.stop_gradient(f_ide), tf.stop_gradient(f_sty), training=True))
    return terms

  def weighted(terms):
    return sum(getattr(c, BEYOND_PAPER_WEIGHTS[name]) * term for name, term in terms.items())

  def replica_step(batch, poison):
    replicas = distribute.replicas_in_sync()
    episodes = c.episodes_per_batch // replicas
    z = batch["z"]  # [E / R * C * (K + Q), Dim]
    with tf.control_dependencies([distribute.check_replica(batch)]), \
        tf.GradientTape(persistent=True) as tape:
      z = model.standardize(z)  # identity unless standardize_latents: L_R in the Entangler's units
      f_ide, f_sty = model.disentangler(z, training=True)
      # The Entangler's view of f_sty: through a noisy channel under the style bottleneck.
      f_sty_sent = f_sty + batch["style_noise"] if c.style_bottleneck_weight else f_sty
      l_r = losses.reconstruction_loss_eq3(z, model.entangler(f_ide, f_sty_sent, training=True))
      support, queries = episodes_lib.split_episode(
          tf.reshape(f_ide, [episodes, way, shot + query, -1]), shot)
      l_c, accuracy = losses.episodic_loss_eq5(support, queries, sampler.query_labels(episodes))
      terms = beyond_paper_terms(z, f_ide, f_sty, f_sty_sent, episodes)
      # Marginal pairs index the global batch's f_sty (every replica's, gathered in replica order).
      t_joint, t_marginal = model.statistician_outputs(f_ide, f_sty, batch["marginal"], training=True,
                                                       pool=distribute.all_gather)
      l_m = donsker_varadhan_share(t_joint, t_marginal) + poison  # poison: 0, or NaN in tests
      loss_u = (c.alpha * l_r + c.beta * l_c + weighted(terms)) / replicas
      loss_m = -c.gamma * l_m / replicas
    g_u = tape.gradient(loss_u, theta + phi)
    g_m = tape.gradient(loss_m, theta + xi)
    # Global gradients and global-batch means (identity on one replica).
    g_u, g_m, (l_r, l_c, l_m, accuracy), terms = distribute.all_sum(
        (g_u, g_m, [l / replicas for l in (l_r, l_c, l_m, accuracy)],
         {name: term / replicas for name, term in terms.items()}))
    g_u_theta, g_u_phi = g_u[:len(theta)], g_u[len(theta):]
    g_m_theta, g_m_xi = g_m[:len(theta)], g_m[len(theta):]
    if c.adaptive_clipping:
      g_a_theta = gradients.adaptive_clip(g_u_theta, g_m_theta)
    else:
      g_a_theta = g_m_theta
    g_theta = [u if a is None else (a if u is None else u + a) for u, a in zip(g_u_theta, g_a_theta)]
    grads = g_theta + list(g_u_phi) + list(g_m_xi)
    # A non-finite loss or gradient (MINE's exp can overflow) must never reach the weights.
    finite = gradients.all_finite([l_r, l_c, l_m, *terms.values()] + grads)
    loss = losses.total_loss_eq6(l_r, l_c, l_m, c.alpha, c.beta, c.gamma) + weighted(terms)
    return grads, {"finite": finite, "loss": loss, **terms,
                   "l_r": l_r, "l_c": l_c, "l_m": l_m, "accuracy": accuracy,
                   "grad_norm_u": tf.linalg.global_norm(g_u_theta),
                   "grad_norm_m": tf.linalg.global_norm(g_m_theta),
                   "clip_fraction": gradients.clip_fraction(g_u_theta, g_m_theta)}

  return _compile(strategy, replica_step, optimizer, variables, batch_spec)


def make_refit_step(model: fden_lib.FDEN, optimizer, strategy=None, batch_spec=None):
  """The compiled Entangler-refit step `step_fn(batch, poison) -> metrics`, for a batch from
  `refit_inputs_fn`: L_R (Eq. 3) between the standardized codes and the Entangler's output from their
  inference-mode (noiseless) factors, differentiated for the Entangler's variables only (phi); the
  Disentangler and the statisticians do not move (`FDENConfig.entangler_refit_steps`)."""
  strategy = strategy or tf.distribute.get_strategy()
  phi = model.phi

  def replica_step(batch, poison):
    replicas = distribute.replicas_in_sync()
    with tf.control_dependencies([distribute.check_replica(batch)]), tf.GradientTape() as tape:
      z = model.standardize(batch["z"])
      f_ide, f_sty = model.disentangler(z, training=False)  # the factors episodic training left
      l_r = losses.reconstruction_loss_eq3(z, model.entangler(f_ide, f_sty, training=True)) + poison
      share = l_r / replicas
    grads, l_r = distribute.all_sum((tape.gradient(share, phi), share))
    return grads, {"finite": gradients.all_finite([l_r] + grads), "l_r_refit": l_r}

  return _compile(strategy, replica_step, optimizer, phi, batch_spec)


def _compile(strategy, replica_step, optimizer, variables, batch_spec):
  """`tf.function(step_fn(batch, poison) -> metrics)` around `replica_step(batch, poison) -> (grads of
  `variables`, metrics)`, whose gradients and metrics are already global (all-summed): the gradients are
  applied only when `metrics["finite"]`."""

  def step_fn(batch, poison):
    grads, metrics = strategy.run(replica_step, args=(batch, poison))
    metrics = distribute.local_value(strategy, metrics)  # the same on every replica

    def apply():
      distribute.apply_gradients(strategy, optimizer, grads, variables)
      return tf.constant(True)

    tf.cond(metrics["finite"], apply, lambda: tf.constant(False))
    return metrics

  signature = None if batch_spec is None else [batch_spec, tf.TensorSpec([], tf.float32)]
  # No autograph: the step has no tensor-dependent Python control flow (and traces faster without it).
  return tf.function(step_fn, input_signature=signature, autograph=False)


def train(model: fden_lib.FDEN, fden_config, latents: np.ndarray, labels: np.ndarray, workdir: str,
          seed: int = 0, show_progress: bool = True, log_every: int = 100,
          guard=training_loop.Guard(), nonfinite_steps=(), hooks=None, strategy=None) -> dict:
  """Trains FDEN episodically on `latents` [N, Dim] with class `labels` [N], resuming from `workdir`, then
  (steps `steps` to `total_steps`) refits its Entangler alone when `entangler_refit_steps` is set: one stage,
  one step counter and one checkpoint series, so a run resumes anywhere in either phase.

  Episodes have the config's training composition (`training_episode`: train_way/shot/query, else the
  task's way/shot/query).
  Returns the mean of the metrics over the last logging window. guard: the divergence guard's settings
  (training_loop.Guard). strategy: a `tf.distribute.Strategy` whose scope `model` was built in (default:
  TensorFlow's default strategy, one device); `episodes_per_batch` is the global batch and must split
  into whole episodes over its replicas. Only the chief writes checkpoints and logs.
  """
  c = fden_config
  strategy = strategy or tf.distribute.get_strategy()
  distribute.check_divisible(strategy, c.episodes_per_batch, "episodes_per_batch")
  refit = c.entangler_refit_steps > 0
  if refit:
    distribute.check_divisible(strategy, c.entangler_refit_batch_size, "entangler_refit_batch_size")
  sampler = episodes_lib.EpisodeSampler(labels, *c.training_episode)
  model.set_latent_statistics(latents)  # a pure function of the cache: the same again on resume
  if strategy.num_replicas_in_sync > 1:
    distribute.synchronize_batch_norm(model)
  with strategy.scope():
    optimizer = make_optimizer(c)
    optimizer.build(model.trainable_variables)  # before the first step (keras#23085 under a strategy)
    # Fresh moments for the Entangler's new task. Its learning rate decays linearly to nothing over the
    # refit: the last iterate then sits in the minimum rather than bouncing around it (on Omniglot, 2,000
    # steps at a constant rate left ||z - z~||^2/||z||^2 at 0.034, decaying at 0.011). Step by step, as a
    # factor on the rate the optimizer holds, so it is checkpointed with it and composes with the divergence
    # guard's reductions.
    # The refit's optimizer is checkpointed only when used, so runs without it keep their checkpoint layout.
    optimizers = {"optimizer": optimizer}
    if refit:
      refit_optimizer = optimizers["refit_optimizer"] = make_optimizer(c)
      refit_optimizer.build(model.phi)
  stage = training_loop.Stage("FDEN", workdir, c.total_steps, c.checkpoint_every,
                              dict(fden=model, **optimizers), list(optimizers.values()), log_every, guard,
                              strategy)
  inputs = distribute.StepInputs(
      strategy, replica_inputs_fn(sampler, latents, c.episodes_per_batch, seed,
                        model.style_dim if c.style_bottleneck_weight else 0),
      c.steps)
  compiled = make_train_step(model, optimizer, sampler, c, strategy, inputs.element_spec)
  if refit:
    refit_inputs = distribute.StepInputs(
        strategy, refit_inputs_fn(latents, c.entangler_refit_batch_size, seed), c.total_steps)
    compiled_refit = make_refit_step(model, refit_optimizer, strategy, refit_inputs.element_spec)

  def step_fn(step, poison):
    step = int(step)
    if step < c.steps:
      if c.learning_rate_schedule == "cosine" and step > 0:  # step by step, as the refit's decay below
        optimizer.learning_rate.assign(
            optimizer.learning_rate * (cosine_decay(step, c.steps) / cosine_decay(step - 1, c.steps)))
      return compiled(inputs(step), poison)
    if step > c.steps:  # linear decay: refit step i (from 0) runs at (1 - i / refit_steps) of the first's rate
      remaining = c.total_steps - step
      refit_optimizer.learning_rate.assign(refit_optimizer.learning_rate * remaining / (remaining + 1))
    return compiled_refit(refit_inputs(step), poison)

  return training_loop.run(stage, step_fn, show_progress, nonfinite_steps, hooks)


def restore_trained(model: fden_lib.FDEN, workdir: str) -> str:
  """Loads FDEN's weights (not its optimizer) from the newest checkpoint under `workdir`."""
  return checkpoints.restore_latest_weights(workdir, "FDEN", fden=model)


def factorise(model: fden_lib.FDEN, latents: np.ndarray, batch_size: int = 2000) -> tuple:
  """Inference-mode (f_ide, f_sty, z~) of cached codes [N, Dim], as numpy arrays [N, Dim] each."""
  fn = tf.function(lambda z: model(z, training=False))
  parts = [fn(tf.convert_to_tensor(latents[i:i + batch_size], tf.float32))
           for i in range(0, len(latents), batch_size)]
  return tuple(np.concatenate([p[k].numpy() for p in parts]) for k in range(3))
