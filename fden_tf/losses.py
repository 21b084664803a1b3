"""Losses as pure functions, named after the paper's equations (FDEN) and ALI's objective.

Shapes: B is the number of samples in a batch, D the latent size, E the number of episodes, C the way,
K the shot, Q the queries per class.
"""

import math

import tensorflow as tf


def reconstruction_loss_eq3(z, z_tilde):
  """Eq. 3, L_R = ||z - z~||_2^2, averaged over the batch. z, z_tilde: [B, D] -> scalar."""
  return tf.reduce_mean(tf.reduce_sum(tf.square(z - z_tilde), axis=-1))


def log_mean_exp(t, axis=None):
  """log(mean(exp(t))) without overflow: logsumexp(t) - log(n)."""
  n = tf.cast(tf.size(t) if axis is None else tf.shape(t)[axis], t.dtype)
  return tf.reduce_logsumexp(t, axis=axis) - tf.math.log(n)


def donsker_varadhan_eq4(t_joint, t_marginal):
  """Eq. 4 (and Eq. 2): the Donsker-Varadhan lower bound on mutual information, in nats.

  L_M = E_joint[T] - log E_marginal[exp(T)]. t_joint: [B] statistician outputs on (f_ide, f_sty) pairs;
  t_marginal: [B'] outputs on pairs whose f_sty was shuffled along the batch. The log-mean-exp is computed
  stably (the authors' log(mean(exp(T)) + 1e-6) overflows once T grows).
  """
  return tf.reduce_mean(t_joint) - log_mean_exp(t_marginal)


def prototype_logits(support, query):
  """Prototypical alignment: logits = -squared Euclidean distance from each query to each class prototype.

  support: [E, C, K, D]; query: [E, M, D] -> logits [E, M, C]. The prototype of a class is the mean of its
  K support embeddings (Snell et al.).
  """
  prototypes = tf.reduce_mean(support, axis=2)  # [E, C, D]
  # ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2, one batched matmul instead of an [E, M, C, D] difference.
  q2 = tf.reduce_sum(tf.square(query), axis=-1, keepdims=True)  # [E, M, 1]
  p2 = tf.reduce_sum(tf.square(prototypes), axis=-1)[:, None, :]  # [E, 1, C]
  qp = tf.matmul(query, prototypes, transpose_b=True)  # [E, M, C]
  return -tf.maximum(q2 - 2.0 * qp + p2, 0.0)


def episodic_loss_eq5(support, query, query_labels):
  """Eq. 5, L_C: cross-entropy of each query's class under the prototype softmax, averaged over queries.

  support: [E, C, K, D]; query: [E, M, D]; query_labels: int [E, M] in 0..C-1. Returns (loss, accuracy).
  """
  logits = prototype_logits(support, query)
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=query_labels, logits=logits))
  correct = tf.equal(tf.argmax(logits, axis=-1, output_type=query_labels.dtype), query_labels)
  return loss, tf.reduce_mean(tf.cast(correct, tf.float32))


def total_loss_eq6(l_r, l_c, l_m, alpha, beta, gamma):
  """Eq. 6, L = alpha L_R + beta L_C - gamma L_M (the minus maximises the DV bound for F_mi; the GRL turns
  that into minimisation for the Disentangler)."""
  return alpha * l_r + beta * l_c - gamma * l_m


def ali_discriminator_loss(logit_real, logit_fake):
  """ALI's discriminator loss: softplus(-D(x, G_z(x))) + softplus(D(G_x(z), z)), batch mean."""
  return tf.reduce_mean(tf.nn.softplus(-logit_real)) + tf.reduce_mean(tf.nn.softplus(logit_fake))


def ali_generator_loss(logit_real, logit_fake):
  """ALI's encoder/generator loss, the labels swapped: softplus(D(x, G_z(x))) + softplus(-D(G_x(z), z))."""
  return tf.reduce_mean(tf.nn.softplus(logit_real)) + tf.reduce_mean(tf.nn.softplus(-logit_fake))


def pixel_reconstruction_loss(x, x_reconstructed):
  """Appendix B.2's l2 reconstruction term ||x - G_x(G_z(x))||_2^2 per image (summed over pixels, so its
  scale is comparable to the adversarial loss), batch mean. x: [B, H, W, C] -> scalar."""
  return tf.reduce_mean(tf.reduce_sum(tf.square(x - x_reconstructed), axis=[1, 2, 3]))


def analytic_gaussian_mi(rho):
  """Mutual information of a bivariate Gaussian with correlation rho, in nats: -1/2 ln(1 - rho^2)."""
  return -0.5 * math.log(1.0 - rho * rho)
