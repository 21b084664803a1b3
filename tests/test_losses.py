import math

import numpy as np
import pytest
import tensorflow as tf

from fden_tf import losses
from fden_tf.data import episodes


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


def test_swap_consistency_closed_form_and_constant_targets():
  f_ide = tf.constant([[1.0, 0.0], [0.0, 2.0]])
  partner = tf.constant([[0.0, 1.0], [3.0, 0.0]])
  g_ide = tf.constant([[1.0, 1.0], [0.0, 0.0]])  # squared errors 1 and 4
  g_sty = tf.constant([[0.0, 1.0], [0.0, 0.0]])  # 0 and 9
  assert losses.swap_consistency_loss(f_ide, partner, g_ide, g_sty).numpy() == pytest.approx((1 + 4 + 0 + 9) / 2)
  assert losses.swap_consistency_loss(f_ide, partner, f_ide, partner).numpy() == 0.0
  with tf.GradientTape() as tape:
    tape.watch([f_ide, partner, g_ide])
    loss = losses.swap_consistency_loss(f_ide, partner, g_ide, g_sty)
  d_ide, d_partner, d_g = tape.gradient(loss, [f_ide, partner, g_ide])
  assert d_ide is None and d_partner is None  # the targets do not move toward the swapped code
  np.testing.assert_allclose(d_g.numpy(), (g_ide - f_ide).numpy())  # d/dg of mean ||g - f||^2 over 2 rows


def test_style_confusion_is_ln_way_when_queries_are_equidistant_and_larger_when_style_identifies():
  way = 5
  prototypes = tf.eye(way)[None, :, None, :]  # [1, C, 1, C]: one-hot prototypes, all sqrt(2) apart
  centre = tf.fill([1, 3, way], 1.0 / way)  # equidistant from every prototype
  assert losses.style_confusion_loss(prototypes, centre).numpy() == pytest.approx(math.log(way), rel=1e-6)
  on_prototypes = tf.eye(way)[None]  # each query on its own class's prototype
  logits = -2.0 * (1.0 - tf.eye(way))  # squared distances 0 (own) and 2 (others)
  expected = -np.mean(tf.nn.log_softmax(logits).numpy())
  assert losses.style_confusion_loss(prototypes, on_prototypes).numpy() == pytest.approx(expected, rel=1e-6)
  assert expected > math.log(way)


def test_identity_swap_pairs_each_sample_with_a_class_mate_and_is_eq3_of_that_pairing():
  # 2 episodes x 3 classes x 2 samples (K + Q = 2), row value = 100 e + 10 c + s.
  rows = tf.constant([[100.0 * e + 10 * c + s] for e in range(2) for c in range(3) for s in range(2)])
  partner = episodes.same_class_partner(rows, episodes=2, way=3, per_class=2).numpy()[:, 0]
  expected = [100 * e + 10 * c + (1 - s) for e in range(2) for c in range(3) for s in range(2)]
  np.testing.assert_array_equal(partner, expected)  # the other sample of the same class and episode
  three = tf.reshape(tf.range(6.0), [6, 1])  # 1 episode x 2 classes x 3 samples: a cycle within each class
  np.testing.assert_array_equal(episodes.same_class_partner(three, 1, 2, 3).numpy()[:, 0], [2, 0, 1, 5, 3, 4])
  z = tf.constant([[1.0, 2.0], [3.0, 5.0]])
  from_partner = tf.constant([[1.0, 0.0], [0.0, 1.0]])
  assert losses.identity_swap_loss(z, from_partner).numpy() == pytest.approx((4.0 + 25.0) / 2)


def test_neutral_style_loss_is_the_distance_to_the_class_mean_plus_the_class_spread():
  # One class of two samples, (0, 0) and (2, 4); each sample's class-mate is the other, and both decode
  # their identity with the neutral style to n. Squared distances: |(0,0) - (1,1)|^2 = 2, |(2,4) - (1,1)|^2
  # = 10; mean 6 = |class mean (1, 2) - n|^2 (1) + the class's spread about its mean (5).
  z = tf.constant([[0.0, 0.0], [2.0, 4.0]])
  neutral = tf.constant([[1.0, 1.0], [1.0, 1.0]])
  class_mate = episodes.same_class_partner(z, 1, 1, 2)
  np.testing.assert_array_equal(class_mate.numpy(), z.numpy()[::-1])
  assert losses.neutral_style_loss(class_mate, neutral).numpy() == pytest.approx(6.0)
  assert losses.neutral_style_loss(class_mate, tf.constant([[1.0, 2.0]] * 2)).numpy() == pytest.approx(5.0)


def test_identity_invariance_is_within_over_total_scatter_and_ignores_scale():
  # One episode, 2 classes x 2 samples in 1-D: class 0 at -1 +- 1, class 1 at +1 +- 1. Within-class squared
  # deviations 1 each (mean 1); from the episode mean 0: 4, 0, 0, 4 (mean 2). Ratio 1 / 2.
  f = tf.constant([[[[-2.0], [0.0]], [[0.0], [2.0]]]])  # [E=1, C=2, S=2, D=1]
  assert losses.identity_invariance_loss(f).numpy() == pytest.approx(0.5, rel=1e-6)
  assert losses.identity_invariance_loss(10.0 * f).numpy() == pytest.approx(0.5, rel=1e-6)  # scale-free
  same = tf.constant([[[[-1.0, 3.0], [-1.0, 3.0]], [[1.0, 0.0], [1.0, 0.0]]]])  # class-mates identical
  assert losses.identity_invariance_loss(same).numpy() == pytest.approx(0.0, abs=1e-7)
  blind = tf.constant([[[[-1.0], [1.0]], [[-1.0], [1.0]]]])  # same class means: the class explains nothing
  assert losses.identity_invariance_loss(blind).numpy() == pytest.approx(1.0, rel=1e-6)
  # Averaged over episodes, each episode's own ratio.
  both = tf.concat([f, blind], axis=0)
  assert losses.identity_invariance_loss(both).numpy() == pytest.approx(0.75, rel=1e-6)


def test_gaussian_kl_closed_form():
  zeros = tf.zeros((3, 4))
  assert losses.gaussian_kl(zeros, zeros).numpy() == pytest.approx(0.0)
  # mu = 1 in each of 4 dims: 1/2 * 4; sigma = e: 1/2 (e^2 - 1 - 2) per dim.
  assert losses.gaussian_kl(tf.ones((3, 4)), zeros).numpy() == pytest.approx(2.0)
  assert losses.gaussian_kl(tf.zeros((2, 1)), tf.ones((2, 1))).numpy() == pytest.approx(0.5 * (math.e ** 2 - 3.0), rel=1e-6)


def test_mmd_imq_closed_form():
  x = tf.constant([[0.0], [1.0]])  # D = 1, C = 2: k(0, 1) = 2 / 3
  # Within each set 2/3; across, the mean of k over all four pairs (1, 1, 2/3, 2/3) = 5/6.
  assert losses.mmd_imq(x, x).numpy() == pytest.approx(2 / 3 + 2 / 3 - 2 * 5 / 6, rel=1e-6)
  far = x + 100.0  # cross-kernel 2 / (2 + ~1e4) ~ 2e-4: nearly only the within-set terms remain
  assert losses.mmd_imq(x, far).numpy() == pytest.approx(4 / 3, rel=1e-3)
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((256, 8)).astype(np.float32) for _ in range(2))
  assert abs(losses.mmd_imq(a, b).numpy()) < 0.01 < losses.mmd_imq(a, 0.3 * b).numpy()


def test_prior_moment_matching_closed_form():
  # Halves [[1, 0], [0, 1]] and [[1, 1], [1, 1]] (D = 2): means (1/2, 1/2) and (1, 1), inner product 1;
  # second moments minus I: [[-1/2, 0], [0, -1/2]] and [[0, 1], [1, 0]], inner product 0. (1 + 0) / 2.
  z = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
  assert losses.prior_moment_matching(z).numpy() == pytest.approx(0.5)
  # Identical halves give the exact squared norms: codes +-c e_1 (mean 0) have second moment diag(c^2, 0),
  # so ((c^2 - 1)^2 + 1) / 2: 1/2 at c = 1 (one empty direction), 5 at c = 2 (plus an over-wide one).
  for c, expected in ((1.0, 0.5), (2.0, 5.0)):
    half = [[c, 0.0], [-c, 0.0]]
    assert losses.prior_moment_matching(tf.constant(half + half)).numpy() == pytest.approx(expected)
  # An odd row is left out, not half-counted.
  assert losses.prior_moment_matching(tf.constant(half + half + [[9.0, 9.0]])).numpy() == pytest.approx(5.0)


def test_prior_moment_matching_is_unbiased_and_sees_the_spread_over_directions():
  rng = np.random.default_rng(0)
  # Prior draws: the split-half estimate averages to 0 over small batches (a plug-in ||estimate||^2 would
  # average D / n = 2 here and pull every code towards 0 to lower it).
  values = [losses.prior_moment_matching(rng.standard_normal((16, 32)).astype(np.float32)).numpy()
            for _ in range(400)]
  assert abs(np.mean(values)) < 0.05
  # Codes with the prior's total variance but all of it in 8 of 32 directions: the (32 - 8) empty
  # directions give 24 and the 8 over-wide ones 8 * 3^2 = 72 of ||E zz^T - I||^2, so (24 + 72) / 32 = 3.
  narrow = np.zeros((4096, 32), np.float32)
  narrow[:, :8] = 2.0 * rng.standard_normal((4096, 8))
  assert losses.prior_moment_matching(narrow).numpy() == pytest.approx(3.0, rel=0.05)
