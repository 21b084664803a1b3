"""Label-preserving image jitter for FDEN's latent cache (FDENConfig.cache_jitters, beyond the paper).

The plugged network is frozen, so FDEN sees each training image only through its one code. A jittered
copy (a small random rotation, scaling and shift of the same drawing or photograph) is another sample of
the same class with other style: encoded once beside the originals, it shows FDEN more within-class
variation at no cost per training step. The test split is never jittered.

Numpy and scipy only (no TensorFlow): bilinear resampling, edges extended with their nearest pixel
(Omniglot's and glyphs' background is 0 at the border, so the fill is background too).
"""

import numpy as np
from scipy import ndimage

MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.10  # the scale is drawn from [0.9, 1.1]
MAX_SHIFT = 0.06  # of the image side, each axis


def affine(image: np.ndarray, degrees: float, scale: float, shift: tuple) -> np.ndarray:
  """`image` [H, W, C] rotated by `degrees` (counter-clockwise) and scaled by `scale` about its centre,
  then moved by `shift` = (down, right) pixels."""
  h, w = image.shape[:2]
  theta = np.deg2rad(degrees)
  # Output pixel o reads input pixel A (o - c - shift) + c: A inverts the rotation and the scaling, in
  # (row, col) coordinates (np.rot90's counter-clockwise quarter turn is degrees=90).
  inverse = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]) / scale
  centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
  offset = centre - inverse @ (centre + np.asarray(shift, np.float64))
  matrix = np.eye(3)
  matrix[:2, :2] = inverse
  return ndimage.affine_transform(image, matrix, offset=np.append(offset, 0.0), order=1, mode="nearest")


def jitter(images: np.ndarray, seed: int) -> np.ndarray:
  """One randomly jittered copy of each image of `images` [N, H, W, C] (float32 in [0, 1]), seeded."""
  rng = np.random.default_rng(seed)
  n, h = len(images), images.shape[1]
  degrees = rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, n)
  scales = rng.uniform(1 - MAX_SCALE_CHANGE, 1 + MAX_SCALE_CHANGE, n)
  shifts = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (n, 2)) * h
  out = np.empty_like(images)
  for i in range(n):
    out[i] = affine(images[i], degrees[i], scales[i], shifts[i])
  return np.clip(out, 0.0, 1.0)
