"""Tests of the procedurally generated glyphs dataset (numpy only, a few seconds in all)."""

import numpy as np
import pytest

from fden_tf.data import glyphs
from fden_tf.data.split import FewShotData, Split

LOW = np.array([glyphs.STYLE_RANGES[name][0] for name in glyphs.STYLE_NAMES], np.float32)
HIGH = np.array([glyphs.STYLE_RANGES[name][1] for name in glyphs.STYLE_NAMES], np.float32)


def small(**overrides) -> FewShotData:
  """A small dataset: 12 classes (4 of them test classes), 3 samples each."""
  kwargs = dict(num_classes=12, num_test_classes=4, samples_per_class=3, seed=0)
  kwargs.update(overrides)
  return glyphs.load_glyphs(**kwargs)


def border(images: np.ndarray) -> np.ndarray:
  """[N, H, W, 1] -> [N]: the most ink on any of the outermost pixels."""
  x = images[..., 0]
  return np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1).max(axis=1)


def style(**factors) -> np.ndarray:
  """NEUTRAL_STYLE with some factors replaced by name."""
  s = glyphs.NEUTRAL_STYLE.copy()
  for name, value in factors.items():
    s[glyphs.STYLE_NAMES.index(name)] = value
  return s


# ---------------------------------------------------------------- shapes, dtypes, ranges


def test_load_glyphs_shapes_dtypes_and_ranges():
  data = small()
  assert data.name == "glyphs"
  for split, k, first in [(data.train, 8, 0), (data.test, 4, 8)]:
    assert isinstance(split, Split)
    assert split.images.shape == (k * 3, 32, 32, 1) and split.images.dtype == np.float32
    assert split.images.min() >= 0.0 and split.images.max() <= 1.0
    np.testing.assert_array_equal(split.labels, np.repeat(np.arange(k), 3))
    assert split.labels.dtype == np.int32
    assert split.class_names == [f"glyph{first + c:04d}" for c in range(k)]
    assert split.styles.shape == (k * 3, 6) and split.styles.dtype == np.float32
    assert np.all(split.styles >= LOW) and np.all(split.styles <= HIGH)
    assert split.identities.shape == (k, glyphs.NUM_STROKES, glyphs.POINTS_PER_STROKE, 2)
    # Every image has a visible character, and ink is mostly saturated strokes, not a smudge.
    assert np.all(split.images.max(axis=(1, 2, 3)) == 1.0)
    assert np.all(split.images.mean(axis=(1, 2, 3)) < 0.3)


def test_images_are_render_of_identity_in_style():
  split = small().test
  again = glyphs.render(split.identities[split.labels], split.styles)
  np.testing.assert_array_equal(again, split.images)


def test_image_size_and_single_render_shape():
  data = small(image_size=16)
  assert data.train.image_shape == (16, 16, 1)
  ids = glyphs.make_identities(2, 0)
  assert glyphs.render(ids[0], glyphs.NEUTRAL_STYLE).shape == (32, 32, 1)
  assert glyphs.render(ids[0], glyphs.NEUTRAL_STYLE, image_size=48).shape == (48, 48, 1)
  assert glyphs.render(ids, np.stack([glyphs.NEUTRAL_STYLE] * 2)).shape == (2, 32, 32, 1)


def test_make_identities_and_sample_styles():
  ids = glyphs.make_identities(7, seed=3)
  assert ids.shape == (7, glyphs.NUM_STROKES, glyphs.POINTS_PER_STROKE, 2)
  assert ids.dtype == np.float32 and np.abs(ids).max() <= 1.0
  assert glyphs.make_identities(0, seed=3).shape == (0, glyphs.NUM_STROKES, glyphs.POINTS_PER_STROKE, 2)
  styles = glyphs.sample_styles(500, np.random.default_rng(0))
  assert styles.shape == (500, 6) and styles.dtype == np.float32
  assert np.all(styles >= LOW) and np.all(styles <= HIGH)
  # Each factor really spans its range (uniform, not a constant column).
  assert np.all(styles.max(0) - styles.min(0) > 0.9 * (HIGH - LOW))
  assert glyphs.NEUTRAL_STYLE.shape == (6,) and glyphs.NEUTRAL_STYLE.dtype == np.float32
  assert np.all(glyphs.NEUTRAL_STYLE >= LOW) and np.all(glyphs.NEUTRAL_STYLE <= HIGH)
  assert set(glyphs.STYLE_RANGES) == set(glyphs.STYLE_NAMES)


# ---------------------------------------------------------------- determinism and splits


def test_deterministic_for_same_seed_and_different_for_other_seed():
  a, b, c = small(), small(), small(seed=1)
  for x, y in [(a.train, b.train), (a.test, b.test)]:
    np.testing.assert_array_equal(x.images, y.images)
    np.testing.assert_array_equal(x.styles, y.styles)
    np.testing.assert_array_equal(x.identities, y.identities)
  assert not np.array_equal(a.train.images, c.train.images)
  assert not np.array_equal(a.train.identities, c.train.identities)
  assert not np.array_equal(a.train.styles, c.train.styles)


def test_train_and_test_classes_are_disjoint():
  data = small()
  assert not set(data.train.class_names) & set(data.test.class_names)
  train = data.train.identities.reshape(len(data.train.identities), -1)
  test = data.test.identities.reshape(len(data.test.identities), -1)
  gaps = np.abs(train[:, None] - test[None]).max(-1)
  assert gaps.min() > 0.05
  # Train and test together are exactly the global identities, train first.
  np.testing.assert_array_equal(
      np.concatenate([data.train.identities, data.test.identities]), glyphs.make_identities(12, 0))


def test_identity_of_class_does_not_depend_on_num_classes():
  np.testing.assert_array_equal(glyphs.make_identities(10, 5)[:5], glyphs.make_identities(5, 5))
  # So a class keeps its strokes when the dataset grows.
  big = small(num_classes=16, num_test_classes=4)
  np.testing.assert_array_equal(big.train.identities[:8], small().train.identities)


# ---------------------------------------------------------------- rendering


def test_batch_render_equals_per_sample_render():
  ids = glyphs.make_identities(5, 1)
  styles = glyphs.sample_styles(5, np.random.default_rng(1))
  batch = glyphs.render(ids, styles)
  for i in range(5):
    np.testing.assert_allclose(batch[i], glyphs.render(ids[i], styles[i]), atol=1e-6)
  # One identity in many styles (and one style for many identities) is broadcast.
  np.testing.assert_allclose(glyphs.render(ids[2], styles), glyphs.render(ids[[2] * 5], styles), atol=1e-6)
  np.testing.assert_allclose(glyphs.render(ids, styles[3]), glyphs.render(ids, styles[[3] * 5]), atol=1e-6)


def test_batch_render_spanning_chunks_equals_per_sample_render():
  n = glyphs._CHUNK + 3
  ids = glyphs.make_identities(n, 2)
  styles = glyphs.sample_styles(n, np.random.default_rng(2))
  batch = glyphs.render(ids, styles)
  for i in [0, glyphs._CHUNK - 1, glyphs._CHUNK, n - 1]:
    np.testing.assert_allclose(batch[i], glyphs.render(ids[i], styles[i]), atol=1e-6)


def test_every_factor_changes_the_image():
  ids = glyphs.make_identities(4, 0)
  neutral = glyphs.render(ids, glyphs.NEUTRAL_STYLE)
  for name in glyphs.STYLE_NAMES:
    low, high = glyphs.STYLE_RANGES[name]
    changed = glyphs.render(ids, style(**{name: high}))
    moved = np.abs(changed - neutral).sum(axis=(1, 2, 3))
    assert np.all(moved > 5.0), name  # at least ~5 pixels' worth of ink moved in every glyph


def test_stroke_width_and_scale_add_ink():
  ids = glyphs.make_identities(6, 0)
  ink = lambda s: glyphs.render(ids, s).sum(axis=(1, 2, 3))
  assert np.all(ink(style(stroke_width=1.8)) > ink(style(stroke_width=0.7)) * 1.5)
  assert np.all(ink(style(scale=1.1)) > ink(style(scale=0.75)))


@pytest.mark.parametrize("k", [1, 3])
def test_shift_by_whole_pixels_translates_the_image(k):
  ids = glyphs.make_identities(4, 0)
  neutral = glyphs.render(ids, glyphs.NEUTRAL_STYLE)[..., 0]
  pixel = 2.0 / 32  # one pixel in units of the half-width
  right = glyphs.render(ids, style(shift_x=k * pixel))[..., 0]
  down = glyphs.render(ids, style(shift_y=k * pixel))[..., 0]
  np.testing.assert_allclose(right[:, :, k:], neutral[:, :, :-k], atol=1e-3)
  np.testing.assert_allclose(down[:, k:, :], neutral[:, :-k, :], atol=1e-3)


def test_positive_rotation_turns_counter_clockwise():
  # A horizontal bar pointing right from the centre: after a positive rotation its tip is higher.
  bar = np.zeros((glyphs.NUM_STROKES, glyphs.POINTS_PER_STROKE, 2), np.float32)
  bar[:, :, 0] = np.linspace(0.0, 0.6, glyphs.POINTS_PER_STROKE)
  image = glyphs.render(bar, style(rotation=0.35))[..., 0]
  rows = np.nonzero(image[:, 24:].max(axis=1) > 0.5)[0]
  assert rows.size and rows.mean() < 14.0  # 15.5 unrotated


def test_glyphs_stay_inside_the_frame_even_for_extreme_styles():
  ids = glyphs.make_identities(200, 0)
  corners = []
  for rotation in (LOW[0], 0.0, HIGH[0]):
    for shift_x in (LOW[2], HIGH[2]):
      for shift_y in (LOW[3], HIGH[3]):
        for shear in (LOW[5], HIGH[5]):
          corners.append([rotation, HIGH[1], shift_x, shift_y, HIGH[4], shear])
  for corner in corners:
    assert border(glyphs.render(ids, np.float32(corner))).max() == 0.0, corner
  assert border(small().train.images).max() == 0.0


# ---------------------------------------------------------------- identity dominates style


def test_identity_dominates_style():
  num_classes, per_class = 20, 10
  ids = glyphs.make_identities(num_classes, 4)
  labels = np.repeat(np.arange(num_classes), per_class)
  styles = glyphs.sample_styles(len(labels), np.random.default_rng(4))
  samples = glyphs.render(ids[labels], styles).reshape(len(labels), -1)
  # Nearest neighbour against one neutral-style template per class: chance is 1/20.
  templates = glyphs.render(ids, glyphs.NEUTRAL_STYLE).reshape(num_classes, -1)
  distances = ((samples[:, None] - templates[None]) ** 2).sum(-1)
  assert (distances.argmin(axis=1) == labels).mean() > 0.4
  # Same class in another style is closer, on average, than another class in the same style.
  restyled = glyphs.render(ids[labels], styles[::-1]).reshape(len(labels), -1)
  other = glyphs.render(ids[(labels + 1) % num_classes], styles).reshape(len(labels), -1)
  assert ((samples - restyled) ** 2).sum(-1).mean() < ((samples - other) ** 2).sum(-1).mean()


def test_classes_look_different():
  ids = glyphs.make_identities(30, 0)
  images = glyphs.render(ids, glyphs.NEUTRAL_STYLE).reshape(30, -1)
  distances = ((images[:, None] - images[None]) ** 2).sum(-1)
  off_diagonal = distances[~np.eye(30, dtype=bool)]
  assert off_diagonal.min() > 5.0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_test_classes=0), "num_test_classes"),
    (dict(num_test_classes=12), "num_test_classes"),
    (dict(num_test_classes=20), "num_test_classes"),
    (dict(samples_per_class=1), "samples_per_class"),
    (dict(image_size=7), "image_size"),
])
def test_load_glyphs_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    small(**kwargs)


def test_render_and_make_identities_reject_bad_arguments():
  ids = glyphs.make_identities(3, 0)
  with pytest.raises(ValueError, match="identity"):
    glyphs.render(ids[0, 0], glyphs.NEUTRAL_STYLE)
  with pytest.raises(ValueError, match="style"):
    glyphs.render(ids[0], glyphs.NEUTRAL_STYLE[:5])
  with pytest.raises(ValueError, match="match"):
    glyphs.render(ids, np.stack([glyphs.NEUTRAL_STYLE] * 2))
  with pytest.raises(ValueError, match="num_classes"):
    glyphs.make_identities(-1, 0)
