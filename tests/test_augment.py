"""data/augment.py: the jitter that FDENConfig.cache_jitters encodes into the latent cache."""

import numpy as np

from fden_tf.data import augment


def _image(shape=(9, 9, 2)):
  return np.random.default_rng(0).uniform(size=shape).astype(np.float32)


def test_affine_known_answers_identity_quarter_turn_shift_and_scale():
  image = _image()
  np.testing.assert_array_equal(augment.affine(image, 0.0, 1.0, (0, 0)), image)
  np.testing.assert_allclose(augment.affine(image, 90.0, 1.0, (0, 0)), np.rot90(image, 1, axes=(0, 1)), atol=1e-5)
  moved = augment.affine(image, 0.0, 1.0, (1, 2))  # one row down, two columns right
  np.testing.assert_allclose(moved[1:, 2:], image[:-1, :-2], atol=1e-6)
  np.testing.assert_allclose(moved[0, 2:], image[0, :-2], atol=1e-6)  # the edge row extended
  doubled = augment.affine(image, 0.0, 2.0, (0, 0))  # twice the size: the centre stays, a neighbour halves
  np.testing.assert_allclose(doubled[4, 4], image[4, 4], atol=1e-6)
  np.testing.assert_allclose(doubled[4, 5], (image[4, 4] + image[4, 5]) / 2, atol=1e-6)


def test_jitter_is_seeded_small_and_keeps_range_shape_and_dtype():
  images = np.zeros((50, 32, 32, 1), np.float32)
  images[:, 10:22, 14:18] = 1.0  # a vertical bar, ink on a 0 background like Omniglot
  a, b = augment.jitter(images, seed=3), augment.jitter(images, seed=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, augment.jitter(images, seed=4))
  assert a.shape == images.shape and a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
  # Small: every copy still overlaps its original by most of the bar, and the ink is roughly conserved.
  overlap = (a * images).sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
  assert overlap.min() > 0.3 and np.all(np.abs(a.sum(axis=(1, 2, 3)) / images[0].sum() - 1) < 0.35)
  assert np.abs(a - images).sum(axis=(1, 2, 3)).min() > 0  # and every copy moved
