"""glyphs: an embedded, procedurally generated few-shot dataset of handwritten-looking characters.

A small, fully deterministic stand-in for Omniglot that needs no download. Every class is an
*identity*: a fixed set of pen strokes (cubic Bezier curves drawn by a random walk with momentum,
so they bend like handwriting; later strokes often start on an earlier one, so characters are
mostly connected). Every sample draws its class's strokes in its own *style*: a ground-truth
vector of six factors (`STYLE_NAMES`) that says how the character is rotated, scaled, shifted,
sheared and how thick the pen is. Images are 32x32 grayscale float32 in [0, 1], ink = 1.

Because both factors are known exactly, `render(identity, style)` can draw any identity in any
style, e.g. the character of sample A in the style of sample B, which is what disentanglement
metrics need.

Coordinates: a glyph lives in [-1, 1]^2, the image's full extent (x to the right, y downwards,
1 = the image's half-width). Each identity is scaled as large as it can be while the most extreme
style in `STYLE_RANGES` (largest scale, any rotation and shear, largest shift, thickest pen) still
leaves the outermost pixels of a 32x32 image blank.

Determinism: class c's strokes come from `np.random.default_rng([seed, c])` alone, so adding
classes never changes existing ones; styles come from a separate stream per (seed, split); the
rasteriser uses only element-wise numpy operations (no BLAS), so an image does not depend on the
batch it is rendered in.
"""

import concurrent.futures
import math
import os

import numpy as np

from fden_tf.data.split import FewShotData, Split

STYLE_NAMES = ("rotation", "scale", "shift_x", "shift_y", "stroke_width", "shear")

# Uniform sampling range of each style factor:
#   rotation: radians, counter-clockwise on screen; scale: multiplies the glyph's size;
#   shift_x / shift_y: translation in units of the image's half-width (2 / image_size per pixel);
#   stroke_width: the pen's half-width in pixels of a 32-pixel image (scaled with image_size);
#   shear: horizontal shear, x += shear * y, applied before scale and rotation.
STYLE_RANGES = {
  "rotation": (-0.35, 0.35),
  "scale": (0.75, 1.1),
  "shift_x": (-0.12, 0.12),
  "shift_y": (-0.12, 0.12),
  "stroke_width": (0.7, 1.8),
  "shear": (-0.3, 0.3),
}

NEUTRAL_STYLE = np.array([0.0, 1.0, 0.0, 0.0, 1.25, 0.0], dtype=np.float32)

NUM_STROKES = 3
POINTS_PER_STROKE = 4  # cubic Bezier control points

# Furthest (in half-widths) a stroke's centre line may reach under any style: the thickest pen
# (1.8 px) plus its 0.5 px anti-aliasing ramp plus half a pixel to the border pixels' centres is
# 2.8 of the 16 pixels of a 32-pixel image's half-width; 0.01 covers the sampling of the bound.
_MAX_REACH = 1.0 - 2.8 / 16.0 - 0.01
# Points sampled along each stroke for rasterising; 8 segments keep a stroke's polyline within
# a fraction of a pixel of the true curve at 32x32.
_CURVE_SAMPLES = 9
# Images rasterised at once: the distance tensor is [chunk, segments, H, W] float32 (~6 MB at 32),
# small enough to stay near the cache and to give each thread many chunks to share the work.
_CHUNK = 64
_STYLE_STREAM = 0x5717E  # separates style random streams from identity streams [seed, c]
_REFERENCE_SIZE = 32  # stroke_width is in pixels of an image of this size


# ----------------------------------------------------------------------------------------------
# Identities and styles
# ----------------------------------------------------------------------------------------------


def _bernstein(num_points: int, num_samples: int) -> np.ndarray:
  """Bezier basis float64 [num_samples, num_points]: weight of each control point at t in [0, 1]."""
  t = np.linspace(0.0, 1.0, num_samples)[:, None]
  i = np.arange(num_points)[None, :]
  n = num_points - 1
  binom = np.array([math.comb(n, k) for k in range(num_points)], dtype=np.float64)
  return binom * t**i * (1.0 - t) ** (n - i)


def _evaluate_curves(control: np.ndarray, num_samples: int) -> np.ndarray:
  """Control points [..., points, 2] -> curve samples [..., num_samples, 2] (same dtype).

  Written as an explicit sum over control points rather than a matmul so that the result is
  element-wise, hence bitwise the same whatever the batch size.
  """
  basis = _bernstein(control.shape[-2], num_samples).astype(control.dtype)
  out = np.zeros(control.shape[:-2] + (num_samples, 2), dtype=control.dtype)
  for k in range(control.shape[-2]):
    out += basis[:, k, None] * control[..., k, None, :]
  return out


def _random_stroke(rng: np.random.Generator, start: np.ndarray, heading: float) -> np.ndarray:
  """One stroke's control points float64 [POINTS_PER_STROKE, 2]: a random walk with momentum.

  The heading turns by a modest random angle per step, so strokes range from nearly straight
  bars to hooks and arcs, like pen strokes, rather than zig-zags.
  """
  points = [start]
  for _ in range(POINTS_PER_STROKE - 1):
    step = rng.uniform(0.35, 0.75)
    points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    heading += rng.normal(0.0, 0.6)
  return np.stack(points)


def _random_start(rng: np.random.Generator, strokes: list) -> tuple:
  """Where the next stroke begins and its initial heading in radians.

  Usually on an earlier stroke and roughly across it, so characters are joined and strokes
  branch or cross instead of retracing each other; otherwise anywhere, in any direction.
  """
  if strokes and rng.random() < 0.6:
    curve = _evaluate_curves(strokes[rng.integers(len(strokes))], 17)
    i = rng.integers(1, 16)
    tangent = curve[i + 1] - curve[i - 1]
    side = rng.choice([-1.0, 1.0])
    heading = np.arctan2(tangent[1], tangent[0]) + side * (np.pi / 2 + rng.normal(0.0, 0.4))
    return curve[i], heading
  return rng.uniform(-0.6, 0.6, size=2), rng.uniform(-np.pi, np.pi)


def _worst_case_reach(curve: np.ndarray) -> float:
  """Largest |x| or |y| of glyph points [P, 2] under any style's shear, scale and rotation (no shift).

  Shear and scale act linearly, so their extremes are at the ends of their ranges; rotation is
  sampled finely enough (0.05 rad) that the bound is off by well under 0.01.
  """
  rotation = np.linspace(*STYLE_RANGES["rotation"], 15)[:, None, None]
  shear = np.array(STYLE_RANGES["shear"])[None, :, None]
  x = curve[:, 0] + shear * curve[:, 1]  # [1, 2, P]
  y = curve[:, 1]
  cos, sin = np.cos(rotation), np.sin(rotation)
  reach = np.maximum(np.abs(cos * x + sin * y), np.abs(-sin * x + cos * y)).max()
  return STYLE_RANGES["scale"][1] * reach


def _normalise(control: np.ndarray) -> np.ndarray:
  """Centres a glyph [strokes, points, 2] on its bounding box and scales it to fill the frame.

  "Fill" means as large as possible while every style keeps it within `_MAX_REACH`. Bezier curves
  are affine-invariant, so transforming the control points transforms the curves. The scale also
  keeps off-curve control points inside [-1, 1]^2.
  """
  curve = _evaluate_curves(control, 33).reshape(-1, 2)
  centre = (curve.min(axis=0) + curve.max(axis=0)) / 2.0
  shift = max(abs(v) for name in ("shift_x", "shift_y") for v in STYLE_RANGES[name])
  fit = (_MAX_REACH - shift) / max(_worst_case_reach(curve - centre), 1e-6)
  reach = np.abs(control - centre).max()
  return (control - centre) * min(fit, 1.0 / max(reach, 1e-6))


def _make_identity(seed: int, class_index: int) -> np.ndarray:
  """Class `class_index`'s strokes float64 [NUM_STROKES, POINTS_PER_STROKE, 2], from (seed, c) only."""
  rng = np.random.default_rng([seed, class_index])
  strokes = []
  for _ in range(NUM_STROKES):
    strokes.append(_random_stroke(rng, *_random_start(rng, strokes)))
  return _normalise(np.stack(strokes))


def make_identities(num_classes: int, seed: int) -> np.ndarray:
  """Control points of `num_classes` random glyphs.

  Returns:
    float32 [num_classes, NUM_STROKES, POINTS_PER_STROKE, 2] in [-1, 1]^2: each stroke is a cubic
    Bezier curve. Class c depends only on (seed, c), so `make_identities(n, s)[:m]` equals
    `make_identities(m, s)` for m <= n.
  """
  if num_classes < 0:
    raise ValueError(f"num_classes must be >= 0, got {num_classes}")
  classes = [_make_identity(seed, c) for c in range(num_classes)]
  shape = (0, NUM_STROKES, POINTS_PER_STROKE, 2)
  return np.stack(classes).astype(np.float32) if classes else np.zeros(shape, np.float32)


def sample_styles(n: int, rng: np.random.Generator) -> np.ndarray:
  """float32 [n, 6] styles, each factor uniform in its `STYLE_RANGES`, columns in `STYLE_NAMES` order."""
  low = np.array([STYLE_RANGES[name][0] for name in STYLE_NAMES])
  high = np.array([STYLE_RANGES[name][1] for name in STYLE_NAMES])
  return rng.uniform(low, high, size=(n, len(STYLE_NAMES))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _transform(points: np.ndarray, style: np.ndarray, image_size: int) -> np.ndarray:
  """Applies each style's affine map to glyph points and converts them to pixel coordinates.

  Args:
    points: float32 [N, P, 2] glyph coordinates in half-widths.
    style: float32 [N, 6].
  Returns:
    float32 [N, P, 2]: (column, row) in pixels, pixel (i, j)'s centre being (j + 0.5, i + 0.5).
  """
  rotation, scale, shift_x, shift_y, _, shear = (style[:, k, None] for k in range(6))
  x = points[..., 0] + shear * points[..., 1]
  y = points[..., 1]
  cos, sin = np.cos(rotation), np.sin(rotation)
  # y points down on screen, so this rotation by +angle turns the glyph counter-clockwise.
  x, y = scale * (cos * x + sin * y) + shift_x, scale * (-sin * x + cos * y) + shift_y
  half = np.float32(image_size / 2.0)
  return np.stack([(x + 1.0) * half, (y + 1.0) * half], axis=-1).astype(np.float32)


def _segment_frames(points: np.ndarray) -> tuple:
  """Per polyline segment, its unit direction, unit normal, midpoint and half-length.

  Args:
    points: float32 [N, strokes, samples, 2] in pixels.
  Returns:
    (direction, normal, midpoint): float32 [N, M, 2] each, and half_length float32 [N, M], with
    M = strokes * (samples - 1).
  """
  n = points.shape[0]
  start = points[:, :, :-1].reshape(n, -1, 2)
  end = points[:, :, 1:].reshape(n, -1, 2)
  delta = end - start
  length = np.sqrt((delta**2).sum(-1))
  # A degenerate (zero-length) segment is a point: any unit direction gives its true distance.
  safe = np.maximum(length, 1e-12)[..., None]
  direction = np.where(length[..., None] > 1e-6, delta / safe, np.float32([1.0, 0.0]))
  direction = direction.astype(np.float32)
  normal = np.stack([-direction[..., 1], direction[..., 0]], axis=-1)
  return direction, normal, (start + end) / 2.0, (length / 2.0).astype(np.float32)


def _axis_distance(axis: np.ndarray, midpoint: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """Signed distance of every pixel centre from each segment's midpoint along `axis`.

  The pixel grid is separable, so the [N, M, H, W] result is one broadcast add of a per-row and
  a per-column term: one pass over the big tensor instead of four.
  """
  offset = (axis * midpoint).sum(-1)[..., None]
  rows = axis[..., 1, None] * grid[None, None, :] - offset  # [N, M, H]
  cols = axis[..., 0, None] * grid[None, None, :]  # [N, M, W]
  return rows[..., :, None] + cols[..., None, :]


def _min_distance(points: np.ndarray, image_size: int) -> np.ndarray:
  """float32 [N, H, W]: distance in pixels from each pixel centre to the nearest polyline segment.

  For a segment with midpoint m, unit direction u, unit normal v and half-length h, the
  distance from p is sqrt(max(|u.(p - m)| - h, 0)^2 + (v.(p - m))^2).
  """
  direction, normal, midpoint, half_length = _segment_frames(points)
  grid = np.arange(image_size, dtype=np.float32) + np.float32(0.5)
  along = _axis_distance(direction, midpoint, grid)
  np.abs(along, out=along)
  along -= half_length[..., None, None]
  np.maximum(along, 0.0, out=along)
  along *= along
  across = _axis_distance(normal, midpoint, grid)
  across *= across
  along += across
  return np.sqrt(along.min(axis=1))


def _render_chunk(identity: np.ndarray, style: np.ndarray, image_size: int) -> np.ndarray:
  """Renders [N, strokes, points, 2] identities in [N, 6] styles -> float32 [N, H, W]."""
  curves = _evaluate_curves(identity, _CURVE_SAMPLES)  # [N, strokes, samples, 2]
  n, strokes, samples, _ = curves.shape
  pixels = _transform(curves.reshape(n, -1, 2), style, image_size).reshape(n, strokes, samples, 2)
  distance = _min_distance(pixels, image_size)
  width = style[:, 4, None, None] * np.float32(image_size / _REFERENCE_SIZE)
  # Coverage falls linearly from 1 to 0 over the pixel straddling the pen's edge: anti-aliasing.
  return np.clip(width + np.float32(0.5) - distance, 0.0, 1.0)


def _broadcast_batch(identity: np.ndarray, style: np.ndarray) -> tuple:
  """Validates shapes and pairs identities with styles: (identity [N, S, P, 2], style [N, 6], batched)."""
  if identity.ndim not in (3, 4) or identity.shape[-1] != 2:
    raise ValueError(f"identity must be [strokes, points, 2] or [N, strokes, points, 2], got {identity.shape}")
  if style.ndim not in (1, 2) or style.shape[-1] != len(STYLE_NAMES):
    raise ValueError(f"style must be [{len(STYLE_NAMES)}] or [N, {len(STYLE_NAMES)}], got {style.shape}")
  batched = identity.ndim == 4 or style.ndim == 2
  identity = identity if identity.ndim == 4 else identity[None]
  style = style if style.ndim == 2 else style[None]
  n = max(len(identity), len(style))
  if len(identity) not in (1, n) or len(style) not in (1, n):
    raise ValueError(f"{len(identity)} identities do not match {len(style)} styles")
  identity = np.broadcast_to(identity, (n,) + identity.shape[1:])
  return identity, np.broadcast_to(style, (n, style.shape[1])), batched


def render(identity: np.ndarray, style: np.ndarray, image_size: int = 32) -> np.ndarray:
  """Draws glyphs.

  Args:
    identity: [strokes, points, 2] Bezier control points (see `make_identities`), or a batch
      [N, strokes, points, 2].
    style: [6] style vector in `STYLE_NAMES` order, or a batch [N, 6]. A single identity with a
      batch of styles (or the reverse) is broadcast.
    image_size: height and width in pixels.
  Returns:
    float32 [image_size, image_size, 1] in [0, 1] (ink = 1), or [N, image_size, image_size, 1]
    if either input is batched. Deterministic, and independent of the batch it is rendered in.
  """
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}")
  identity, style, batched = _broadcast_batch(
      np.asarray(identity, np.float32), np.asarray(style, np.float32))
  images = np.zeros((len(identity), image_size, image_size, 1), np.float32)

  def draw(start: int) -> None:
    stop = start + _CHUNK
    images[start:stop, ..., 0] = _render_chunk(identity[start:stop], style[start:stop], image_size)

  starts = range(0, len(identity), _CHUNK)
  if len(starts) > 1:
    # numpy releases the GIL inside its loops, so threads use every core; each chunk owns its
    # slice of the output, so the result does not depend on scheduling.
    workers = min(len(starts), os.cpu_count() or 1, 8)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      list(pool.map(draw, starts))
  else:
    for start in starts:
      draw(start)
  return images if batched else images[0]


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


def _validate(num_classes: int, num_test_classes: int, samples_per_class: int, image_size: int) -> None:
  """Raises ValueError naming the offending argument of `load_glyphs`."""
  if not 1 <= num_test_classes < num_classes:
    raise ValueError(
        f"num_test_classes must be >= 1 and < num_classes ({num_classes}), got {num_test_classes}")
  if samples_per_class < 2:
    raise ValueError(f"samples_per_class must be >= 2, got {samples_per_class}")
  if image_size < 8:
    raise ValueError(f"image_size must be >= 8, got {image_size}")


def _make_split(identities: np.ndarray, first_class: int, samples_per_class: int, image_size: int,
                rng: np.random.Generator) -> Split:
  """One side of the split: every class drawn `samples_per_class` times in random styles.

  Args:
    identities: float32 [k, strokes, points, 2], this split's classes in order.
    first_class: global index of identities[0], for the class names.
  """
  k = len(identities)
  labels = np.repeat(np.arange(k, dtype=np.int32), samples_per_class)
  styles = sample_styles(len(labels), rng)
  images = render(identities[labels], styles, image_size)
  names = [f"glyph{first_class + c:04d}" for c in range(k)]
  return Split(images=images, labels=labels, class_names=names, styles=styles, identities=identities)


def load_glyphs(num_classes: int = 1200, num_test_classes: int = 200, samples_per_class: int = 20,
                image_size: int = 32, seed: int = 0) -> FewShotData:
  """Generates the glyphs dataset.

  The first `num_classes - num_test_classes` identities form `train`, the last
  `num_test_classes` form `test`. In each split, labels are 0..k-1 in class-major order
  (`samples_per_class` consecutive samples per class), `styles` is float32 [N, 6], `images` is
  float32 [N, image_size, image_size, 1] and `identities[label]` is that class's identity.
  Same arguments give bitwise-identical arrays.
  """
  _validate(num_classes, num_test_classes, samples_per_class, image_size)
  identities = make_identities(num_classes, seed)
  num_train = num_classes - num_test_classes
  splits = []
  for index, (lo, hi) in enumerate([(0, num_train), (num_train, num_classes)]):
    rng = np.random.default_rng([seed, _STYLE_STREAM, index])
    splits.append(_make_split(identities[lo:hi], lo, samples_per_class, image_size, rng))
  return FewShotData(name="glyphs", train=splits[0], test=splits[1])
