"""Training FDEN on the cached codes of a frozen plugged network (Section 3.3)."""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import checkpoints
from fden_tf import fden as fden_lib
from fden_tf import gradients
from fden_tf import losses
from fden_tf import training_loop
from fden_tf.data import episodes as episodes_lib


def make_optimizer(c):
  return keras.optimizers.Adam(learning_rate=c.learning_rate, beta_1=c.beta_1, beta_2=c.beta_2)


def make_train_step(model: fden_lib.FDEN, optimizer, sampler: episodes_lib.EpisodeSampler, latents,
                    fden_config, seed: int):
  """The compiled FDEN step `step_fn(step, poison) -> metrics` on a batch of episodes drawn from
  `latents` [N, Dim] (the frozen network's codes); episodes and shuffles are functions of (seed, step).

  Eq. 7 needs the norms of two gradients of the same variables, so the tape gives them separately
  (per-loss gradients, not a tf.custom_gradient: a custom gradient sees only the gradient flowing through
  it, never the other loss's): g_u of alpha L_R + beta L_C and g_m of -gamma L_M, which reaches the
  Disentangler only through the GRL and so arrives as +gamma lambda dL_M/dtheta.
  """
  c = fden_config
  episodes, way, shot, query = c.episodes_per_batch, sampler.way, sampler.shot, sampler.query
  latents = tf.convert_to_tensor(latents, tf.float32)
  theta, phi, xi = model.theta, model.phi, model.xi
  query_labels = sampler.query_labels(episodes)

  @tf.function
  def step_fn(step, poison):
    seed_t = tf.stack([tf.constant(seed, tf.int64), step])
    episode_seed, shuffle_seed = tf.unstack(tf.random.experimental.stateless_split(seed_t, 2))
    indices = tf.reshape(sampler.sample(episode_seed, episodes), [-1])
    z = tf.gather(latents, indices)  # [E * C * (K + Q), Dim]
    n = tf.shape(z)[0]
    # The product of marginals of Eq. 4: f_sty shuffled along the batch axis.
    permutation = tf.argsort(tf.random.stateless_uniform([n], shuffle_seed))
    with tf.GradientTape(persistent=True) as tape:
      f_ide, f_sty, z_tilde = model(z, training=True)
      l_r = losses.reconstruction_loss_eq3(z, z_tilde)
      support, queries = episodes_lib.split_episode(
          tf.reshape(f_ide, [episodes, way, shot + query, -1]), shot)
      l_c, accuracy = losses.episodic_loss_eq5(support, queries, query_labels)
      t_joint, t_marginal = model.statistician_outputs(f_ide, f_sty, permutation, training=True)
      l_m = losses.donsker_varadhan_eq4(t_joint, t_marginal) + poison  # poison: 0, or NaN in tests
      loss_u = c.alpha * l_r + c.beta * l_c
      loss_m = -c.gamma * l_m
    g_u = tape.gradient(loss_u, theta + phi)
    g_m = tape.gradient(loss_m, theta + xi)
    g_u_theta, g_u_phi = g_u[:len(theta)], g_u[len(theta):]
    g_m_theta, g_m_xi = g_m[:len(theta)], g_m[len(theta):]
    if c.adaptive_clipping:
      g_a_theta = gradients.adaptive_clip(g_u_theta, g_m_theta)
    else:
      g_a_theta = g_m_theta
    g_theta = [u if a is None else (a if u is None else u + a) for u, a in zip(g_u_theta, g_a_theta)]
    grads = g_theta + list(g_u_phi) + list(g_m_xi)
    # A non-finite loss or gradient (MINE's exp can overflow) must never reach the weights.
    finite = gradients.all_finite([l_r, l_c, l_m] + grads)

    def apply():
      optimizer.apply(grads, theta + phi + xi)
      return tf.constant(True)

    tf.cond(finite, apply, lambda: tf.constant(False))
    return {"finite": finite, "loss": losses.total_loss_eq6(l_r, l_c, l_m, c.alpha, c.beta, c.gamma),
            "l_r": l_r, "l_c": l_c, "l_m": l_m, "accuracy": accuracy,
            "grad_norm_u": tf.linalg.global_norm(g_u_theta),
            "grad_norm_m": tf.linalg.global_norm(g_m_theta),
            "clip_fraction": gradients.clip_fraction(g_u_theta, g_m_theta)}

  return step_fn


def train(model: fden_lib.FDEN, fden_config, latents: np.ndarray, labels: np.ndarray, workdir: str,
          seed: int = 0, show_progress: bool = True, log_every: int = 100,
          guard=training_loop.Guard(), nonfinite_steps=(), hooks=None) -> dict:
  """Trains FDEN episodically on `latents` [N, Dim] with class `labels` [N], resuming from `workdir`.

  Returns the mean of the metrics over the last logging window. guard: the divergence guard's settings
  (training_loop.Guard).
  """
  c = fden_config
  sampler = episodes_lib.EpisodeSampler(labels, c.way, c.shot, c.query)
  optimizer = make_optimizer(c)
  optimizer.build(model.trainable_variables)
  stage = training_loop.Stage("FDEN", workdir, c.steps, c.checkpoint_every,
                              dict(fden=model, optimizer=optimizer), [optimizer], log_every, guard)
  step_fn = make_train_step(model, optimizer, sampler, latents, c, seed)
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
