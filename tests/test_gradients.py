import numpy as np
import pytest
import tensorflow as tf

from fden_tf import gradients


@pytest.mark.parametrize("lambda_", [1.0, 0.3, 2.5])
def test_grl_forward_is_identity_and_backward_is_minus_lambda(lambda_):
  x = tf.constant([[1.5, -2.0, 0.25]])
  upstream = tf.constant([[0.7, -1.1, 3.0]])
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = gradients.gradient_reversal(x, lambda_)
    # The gradient arriving at y is `upstream`; its reversal must come out at x.
    loss = tf.reduce_sum(y * upstream)
  np.testing.assert_array_equal(y.numpy(), x.numpy())
  np.testing.assert_allclose(tape.gradient(loss, x).numpy(), -lambda_ * upstream.numpy(), rtol=0, atol=1e-7)


def test_grl_reverses_gradient_to_variables_upstream():
  w = tf.Variable([2.0, 3.0])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(gradients.gradient_reversal(w * w, 0.5))
  np.testing.assert_allclose(tape.gradient(loss, w).numpy(), [-0.5 * 4.0, -0.5 * 6.0])


def test_adaptive_clip_shrinks_g_m_when_larger_than_g_u():
  g_u = [tf.constant([3.0, 4.0])]  # ||g_u|| = 5
  g_m = [tf.constant([0.0, 10.0])]  # ||g_m|| = 10 -> rescaled to norm 5, same direction
  (g_a,) = gradients.adaptive_clip(g_u, g_m)
  np.testing.assert_allclose(g_a.numpy(), [0.0, 5.0], atol=1e-6)


def test_adaptive_clip_leaves_g_m_when_smaller_than_g_u():
  g_u = [tf.constant([6.0, 8.0])]  # ||g_u|| = 10
  g_m = [tf.constant([1.0, -2.0, 2.0])[:2]]  # ||g_m|| = sqrt(5) < 10: untouched
  (g_a,) = gradients.adaptive_clip(g_u, g_m)
  np.testing.assert_allclose(g_a.numpy(), [1.0, -2.0], atol=1e-6)


def test_adaptive_clip_per_variable_includes_biases_and_handles_none():
  g_u = [tf.constant([[1.0, 0.0], [0.0, 0.0]]), tf.constant([0.5]), None, tf.constant([1.0])]
  g_m = [tf.constant([[0.0, 0.0], [0.0, 4.0]]), tf.constant([-2.0]), tf.constant([7.0]), None]
  out = gradients.adaptive_clip(g_u, g_m)
  np.testing.assert_allclose(out[0].numpy(), [[0.0, 0.0], [0.0, 1.0]], atol=1e-6)
  np.testing.assert_allclose(out[1].numpy(), [-0.5], atol=1e-6)  # a 1-D bias is clipped too
  np.testing.assert_allclose(out[2].numpy(), [7.0])  # no g_u to compare with: unchanged
  assert out[3] is None


def test_adaptive_clip_global_scope_uses_norms_over_all_variables():
  g_u = [tf.constant([3.0]), tf.constant([4.0])]  # global norm 5
  g_m = [tf.constant([6.0]), tf.constant([8.0])]  # global norm 10 -> scale 0.5
  out = gradients.adaptive_clip(g_u, g_m, scope="global")
  np.testing.assert_allclose([o.numpy()[0] for o in out], [3.0, 4.0], atol=1e-6)


def test_adaptive_clip_zero_g_m_stays_zero():
  (g_a,) = gradients.adaptive_clip([tf.constant([1.0, 1.0])], [tf.constant([0.0, 0.0])])
  np.testing.assert_array_equal(g_a.numpy(), [0.0, 0.0])
