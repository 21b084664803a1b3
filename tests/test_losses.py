import math

import numpy as np
import pytest
import tensorflow as tf

from fden_tf import losses


def test_reconstruction_eq3_is_mean_squared_l2_norm():
  z = tf.constant([[1.0, 2.0], [0.0, 0.0]])
  z_tilde = tf.constant([[1.0, 0.0], [3.0, 4.0]])
  assert losses.reconstruction_loss_eq3(z, z_tilde).numpy() == pytest.approx((4.0 + 25.0) / 2)


def test_log_mean_exp_is_stable_for_large_values():
  t = tf.constant([1000.0, 1000.0, 1000.0])
  assert losses.log_mean_exp(t).numpy() == pytest.approx(1000.0)
  t = tf.constant([0.0, math.log(3.0)])
  assert losses.log_mean_exp(t).numpy() == pytest.approx(math.log(2.0))


def test_donsker_varadhan_eq4_closed_form():
  t_joint = tf.constant([1.0, 3.0])
  t_marginal = tf.constant([0.0, 0.0, math.log(4.0)])
  expected = 2.0 - math.log((1 + 1 + 4) / 3)
  assert losses.donsker_varadhan_eq4(t_joint, t_marginal).numpy() == pytest.approx(expected, rel=1e-6)


def test_prototype_logits_are_negative_squared_distances_to_class_means():
  support = tf.constant([[[[0.0, 0.0], [2.0, 0.0]], [[0.0, 4.0], [0.0, 6.0]]]])  # E=1, C=2, K=2, D=2
  query = tf.constant([[[1.0, 0.0], [0.0, 5.0]]])
  logits = losses.prototype_logits(support, query).numpy()
  # prototypes (1, 0) and (0, 5)
  np.testing.assert_allclose(logits, [[[0.0, -26.0], [-26.0, 0.0]]], atol=1e-5)


def test_episodic_eq5_cross_entropy_and_accuracy():
  support = tf.constant([[[[0.0]], [[1.0]]]])  # E=1, C=2, K=1, D=1
  query = tf.constant([[[0.0], [0.9]]])
  labels = tf.constant([[0, 0]])
  loss, acc = losses.episodic_loss_eq5(support, query, labels)
  # query 0: logits (0, -1); query 1: logits (-0.81, -0.01)
  ce0 = -math.log(1 / (1 + math.exp(-1)))
  ce1 = -(-0.81 - math.log(math.exp(-0.81) + math.exp(-0.01)))
  assert loss.numpy() == pytest.approx((ce0 + ce1) / 2, rel=1e-5)
  assert acc.numpy() == pytest.approx(0.5)


def test_total_eq6_signs():
  assert float(losses.total_loss_eq6(2.0, 3.0, 4.0, alpha=1.0, beta=1.0, gamma=0.5)) == pytest.approx(3.0)


def test_ali_losses_are_swapped_softplus():
  real, fake = tf.constant([2.0]), tf.constant([-1.0])
  sp = lambda v: math.log1p(math.exp(v))
  assert losses.ali_discriminator_loss(real, fake).numpy() == pytest.approx(sp(-2.0) + sp(-1.0), rel=1e-6)
  assert losses.ali_generator_loss(real, fake).numpy() == pytest.approx(sp(2.0) + sp(1.0), rel=1e-6)
