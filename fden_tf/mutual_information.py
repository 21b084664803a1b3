"""Mutual information estimation with a fresh statisticians network (MINE's Donsker-Varadhan bound, Eq. 4).

Used to check the estimator against closed forms and, after training, to measure how independent f_ide
and f_sty really are (the training statistician was fought against by the Disentangler, so its own figure
says little).
"""

import keras
import numpy as np
import tensorflow as tf

from fden_tf import fden as fden_lib
from fden_tf import losses


def estimate(a: np.ndarray, b: np.ndarray, steps: int = 1000, batch_size: int = 256,
             learning_rate: float = 1e-3, hidden_scale: float = 0.25, seed: int = 0,
             eval_size: int = 4096) -> float:
  """Trains a new F_mi to maximise the DV bound between paired samples a [N, Da] and b [N, Db] and returns
  the bound in nats, evaluated in inference mode on (up to) `eval_size` pairs with a fixed shuffle."""
  a = tf.convert_to_tensor(a, tf.float32)
  b = tf.convert_to_tensor(b, tf.float32)
  n = int(a.shape[0])
  critic = fden_lib.Statistician(hidden_scale=hidden_scale, dropout=0.0, init_stddev=0.01)
  critic(a[:2], b[:2])
  optimizer = keras.optimizers.Adam(learning_rate)
  optimizer.build(critic.trainable_variables)

  @tf.function
  def step(seed_t):
    idx_seed, perm_seed = tf.unstack(tf.random.experimental.stateless_split(seed_t, 2))
    idx = tf.random.stateless_uniform([batch_size], idx_seed, maxval=n, dtype=tf.int32)
    perm = tf.argsort(tf.random.stateless_uniform([batch_size], perm_seed))
    xa, xb = tf.gather(a, idx), tf.gather(b, idx)
    with tf.GradientTape() as tape:
      t = critic(tf.concat([xa, xa], 0), tf.concat([xb, tf.gather(xb, perm)], 0), training=True)
      t_joint, t_marginal = tf.split(t, 2)
      loss = -losses.donsker_varadhan_eq4(t_joint, t_marginal)
    optimizer.apply(tape.gradient(loss, critic.trainable_variables), critic.trainable_variables)

  for i in range(steps):
    step(tf.constant([seed, i], tf.int64))
  m = min(n, eval_size)
  perm = np.random.default_rng(seed).permutation(m)
  t_joint = critic(a[:m], b[:m], training=False)
  t_marginal = critic(a[:m], tf.gather(b[:m], perm), training=False)
  return float(losses.donsker_varadhan_eq4(t_joint, t_marginal))
