"""The two gradient manipulations of Section 3.3: the gradient reversal layer and adaptive clipping (Eq. 7)."""

import tensorflow as tf


def gradient_reversal(x, lambda_=1.0):
  """Identity in the forward pass; multiplies the incoming gradient by -lambda_ in the backward pass.

  Ganin et al.'s GRL, placed in front of the statisticians network F_mi so that F_mi ascends L_M (estimating
  the mutual information) while the Disentangler upstream descends it (making f_ide and f_sty independent).
  """
  lambda_ = tf.convert_to_tensor(lambda_, dtype=x.dtype)

  @tf.custom_gradient
  def _reverse(x):
    def grad(upstream):
      return -lambda_ * upstream
    return tf.identity(x), grad

  return _reverse(x)


def _norm(g):
  return tf.sqrt(tf.reduce_sum(tf.square(g)))


def adaptive_clip(g_u, g_m, scope="per_variable", epsilon=1e-12):
  """MINE's adaptive gradient clipping, Eq. 7: g_a = min(||g_u||, ||g_m||) * g_m / ||g_m||.

  Rescales the mutual-information gradient g_m so it is never larger than the gradient g_u of the other
  objectives, and leaves it alone when it is smaller. The direction of g_m is kept.

  Args:
    g_u: list of tensors (or None), gradients of alpha*L_R + beta*L_C for each shared variable.
    g_m: list of tensors (or None), gradients of the L_M term (through the GRL) for the same variables.
    scope: "per_variable" takes both norms per variable tensor (every variable, 1-D biases and batch-norm
      parameters included; the authors' code skipped those by accident), "global" over all of them at once.
    epsilon: guards the division when g_m is zero.

  Returns:
    The list g_a, with None where g_m is None and g_m unchanged where g_u is None (nothing to compare to).
  """
  if scope == "global":
    pairs = [(u, m) for u, m in zip(g_u, g_m) if u is not None and m is not None]
    norm_u = tf.linalg.global_norm([u for u, _ in pairs])
    norm_m = tf.linalg.global_norm([m for _, m in pairs])
    scale = tf.minimum(norm_u, norm_m) / tf.maximum(norm_m, epsilon)
    return [m if m is None or u is None else m * scale for u, m in zip(g_u, g_m)]
  if scope != "per_variable":
    raise ValueError(f"unknown clipping scope {scope!r}; use 'per_variable' or 'global'")
  clipped = []
  for u, m in zip(g_u, g_m):
    if m is None or u is None:
      clipped.append(m)
      continue
    norm_m = _norm(m)
    clipped.append(m * (tf.minimum(_norm(u), norm_m) / tf.maximum(norm_m, epsilon)))
  return clipped


def clip_fraction(g_u, g_m):
  """Fraction of variables whose g_m was larger than g_u, i.e. where Eq. 7 actually bound (for logging)."""
  bound = [tf.cast(_norm(m) > _norm(u), tf.float32) for u, m in zip(g_u, g_m)
           if u is not None and m is not None]
  return tf.reduce_mean(tf.stack(bound)) if bound else tf.constant(0.0)


def all_finite(tensors):
  """True when every element of every (non-None) tensor is finite: the divergence guard's test."""
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])
