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


def swap_consistency_loss(f_ide, f_sty_partner, g_ide, g_sty):
  """Beyond the paper: the factors of a translated code are the factors it was made from.

  z_swap = E(f_ide^A, f_sty^B) is disentangled again into (g_ide, g_sty); the loss asks for f_ide^A and
  f_sty^B back: ||g_ide - f_ide^A||^2 + ||g_sty - f_sty^B||^2, summed over factor dimensions and averaged
  over the batch. The targets are constants (no gradient), so the term trains the Entangler to respect both
  factors and the Disentangler to read them back, not the targets to move toward the swapped code.
  All inputs [B, D] -> scalar.
  """
  f_ide, f_sty_partner = tf.stop_gradient(f_ide), tf.stop_gradient(f_sty_partner)
  return (tf.reduce_mean(tf.reduce_sum(tf.square(g_ide - f_ide), axis=-1))
          + tf.reduce_mean(tf.reduce_sum(tf.square(g_sty - f_sty_partner), axis=-1)))


def style_confusion_loss(support, query):
  """Beyond the paper: f_sty should not solve the episode. Cross-entropy of the prototype softmax on f_sty
  against the uniform distribution over the C classes, averaged over queries (a domain-confusion loss,
  Tzeng et al. 2015). Its minimum, ln C, is reached when every query is equally far from every class's
  prototype: f_sty then carries no identity that nearest-prototype few-shot could use.
  support: [E, C, K, D] of f_sty; query: [E, M, D] -> scalar (>= ln C)."""
  log_p = tf.nn.log_softmax(prototype_logits(support, query), axis=-1)  # [E, M, C]
  return -tf.reduce_mean(log_p)


def identity_swap_loss(z, z_from_partner_identity):
  """Beyond the paper: Eq. 3 with the identity of another sample of the same class, ||z - E(f_ide^{A'},
  f_sty^A)||^2 where A' is A's class-mate (episodes.same_class_partner). Whatever in z is particular to
  sample A (its style) can then only reach z~ through f_sty: f_ide is pushed to hold the class alone and
  the Entangler to combine factors of two samples, which translation asks of it (Mathieu et al. 2016 and
  Jha et al. 2018 swap within a class in the same way). [B, Dim] x [B, Dim] -> scalar."""
  return reconstruction_loss_eq3(z, z_from_partner_identity)


def identity_invariance_loss(f_ide):
  """Beyond the paper: Fisher's criterion on f_ide, its within-class scatter over its total scatter in each
  episode, averaged over episodes. 0 when every class-mate has the same f_ide (identity only), 1 when the
  class explains nothing. The episodic loss (Eq. 5) only asks a query to be nearer its own prototype than
  the others, which f_ide can satisfy while keeping the style (scale, pen) it varies with; this ratio asks
  for the style to go, and it does not change when f_ide is scaled, so it cannot be met by shrinking.
  f_ide: [E, C, S, D] (episodes, classes, samples of each class) -> scalar in [0, 1]."""
  class_means = tf.reduce_mean(f_ide, axis=2, keepdims=True)
  episode_means = tf.reduce_mean(f_ide, axis=[1, 2], keepdims=True)
  within = tf.reduce_mean(tf.reduce_sum(tf.square(f_ide - class_means), -1), axis=[1, 2])
  total = tf.reduce_mean(tf.reduce_sum(tf.square(f_ide - episode_means), -1), axis=[1, 2])
  return tf.reduce_mean(within / (total + 1e-12))


def neutral_style_loss(z_class_mate, z_neutral_style):
  """Beyond the paper: ||z_{A'} - E(f_ide^A, 0)||^2, A' a class-mate of A. Its expectation over class-mates
  is ||mean code of A's class - E(f_ide^A, 0)||^2 plus the class's own spread (a constant), so it asks A's
  identity decoded with the neutral style (0, where the style bottleneck's rate pulls f_sty) for the code of
  A's class in its average style: whatever f_ide keeps of A's own style only adds error here, and the
  Entangler learns what a style of 0 means, the origin from which f_sty^B moves a translation.
  [B, Dim] x [B, Dim] -> scalar."""
  return reconstruction_loss_eq3(z_class_mate, z_neutral_style)


def style_rate(f_sty):
  """Beyond the paper: the rate of the style bottleneck, KL(N(f_sty, I) || N(0, I)) = ||f_sty||^2 / 2 per
  sample, batch mean. With the Entangler reading f_sty + N(0, I) noise in training, every nat f_sty carries
  costs this much: what f_ide already gives the Entangler (identity) is not worth sending again through
  f_sty, so f_sty keeps what only it can give (style). [B, D] -> scalar."""
  return 0.5 * tf.reduce_mean(tf.reduce_sum(tf.square(f_sty), axis=-1))


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


def gaussian_kl(mu, log_sigma):
  """KL(N(mu, sigma^2) || N(0, I)) per sample, summed over latent dimensions, batch mean:
  1/2 sum(mu^2 + sigma^2 - 1 - 2 log sigma). mu, log_sigma: [B, D] -> scalar. Beyond ALI (the `kl_weight`
  of ALIConfig): it keeps the encoder's codes where the generator's prior puts them."""
  return tf.reduce_mean(0.5 * tf.reduce_sum(tf.square(mu) + tf.exp(2.0 * log_sigma) - 1.0 - 2.0 * log_sigma,
                                            axis=-1))


def mmd_imq(x, y, scale=1.0):
  """Unbiased squared maximum mean discrepancy between samples x [N, D] and y [M, D] under the inverse
  multiquadratic kernel k(a, b) = C / (C + ||a - b||^2), C = 2 D scale^2 (WAE-MMD, Tolstikhin et al. 2018):
  mean k over distinct pairs within x, plus within y, minus twice the mean k across. Beyond ALI (the
  `prior_matching_weight` of ALIConfig): it pulls the encoder's *aggregate* codes toward the prior N(0, I)
  without a per-sample KL's pull of every code to the origin."""
  c = 2.0 * tf.cast(tf.shape(x)[1], x.dtype) * scale ** 2
  kernel = lambda a, b: c / (c + tf.maximum(tf.reduce_sum(tf.square(a), 1)[:, None] - 2.0 * tf.matmul(
      a, b, transpose_b=True) + tf.reduce_sum(tf.square(b), 1)[None, :], 0.0))
  n, m = tf.cast(tf.shape(x)[0], x.dtype), tf.cast(tf.shape(y)[0], x.dtype)
  within = lambda k, size: (tf.reduce_sum(k) - tf.linalg.trace(k)) / (size * (size - 1.0))
  return within(kernel(x, x), n) + within(kernel(y, y), m) - 2.0 * tf.reduce_mean(kernel(x, y))


def prior_moment_matching(z):
  """Unbiased ( ||E z||^2 + ||E[z z^T] - I||_F^2 ) / D for a batch z [N, D] (N >= 2): how far the first two
  moments of the codes are from the prior N(0, I)'s. The batch is cut into two halves and each squared norm
  is the inner product of one half's estimate with the other's, whose expectation is the squared norm of
  the expectation (an estimate squared would add its own variance, a pull that shrinks the codes). Beyond
  ALI: `ALIConfig.prior_moment_weight`, on the posterior means."""
  half = tf.shape(z)[0] // 2
  a, b = z[:half], z[half:2 * half]
  n, dim = tf.cast(half, z.dtype), tf.cast(tf.shape(z)[1], z.dtype)
  mean_term = tf.reduce_sum(tf.reduce_mean(a, 0) * tf.reduce_mean(b, 0))
  eye = tf.eye(tf.shape(z)[1], dtype=z.dtype)
  moment_a = tf.matmul(a, a, transpose_a=True) / n - eye
  moment_b = tf.matmul(b, b, transpose_a=True) / n - eye
  return (mean_term + tf.reduce_sum(moment_a * moment_b)) / dim


def analytic_gaussian_mi(rho):
  """Mutual information of a bivariate Gaussian with correlation rho, in nats: -1/2 ln(1 - rho^2)."""
  return -0.5 * math.log(1.0 - rho * rho)
