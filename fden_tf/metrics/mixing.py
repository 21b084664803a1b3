"""What each factor changes when two images' factors are mixed: a translation measure for any dataset.

The ground-truth translation score (`ground_truth`) needs every image's true style, which only glyphs has.
Without it one can still ask how much of the difference between two images each factor carries. For pairs
(A, B) of held-out images of different classes, FDEN's Entangler E and the frozen decoder G:

  style share    = sum ||G(E(f_ide^A, f_sty^B)) - G(E(f_ide^A, f_sty^A))||^2 / sum ||G(z_B) - G(z_A)||^2
  identity share = sum ||G(E(f_ide^B, f_sty^A)) - G(E(f_ide^A, f_sty^A))||^2 / sum ||G(z_B) - G(z_A)||^2

and the same in code space (E's codes instead of decoded images). A style share near 0 says the Entangler
ignores f_sty: mixing styles translates nothing, however little identity leaks into f_sty (a leakage score
near chance can mean an empty f_sty). An identity share near 0 says the same of f_ide.
"""

import numpy as np
import tensorflow as tf

from fden_tf import plugin
from fden_tf.metrics import ground_truth


def shares(base: np.ndarray, style_swapped: np.ndarray, identity_swapped: np.ndarray, a_to_b: np.ndarray,
           ) -> dict:
  """The two shares from arrays [N, ...]: E(A, A), E(A's identity, B's style), E(B's identity, A's style)
  and the pairs' own difference (B minus A), as codes or images."""
  total = max(float(np.square(np.asarray(a_to_b, np.float64)).sum()), 1e-30)
  change = lambda x: float(np.square(np.asarray(x, np.float64) - np.asarray(base, np.float64)).sum())
  return {"style_share": change(style_swapped) / total, "identity_share": change(identity_swapped) / total}


def factor_mixing(plugged, model, z: np.ndarray, labels: np.ndarray, pairs: int, seed: int) -> dict:
  """Style and identity shares, in code space and in decoded pixels, on `pairs` random pairs of codes
  z [N, Dim] with labels [N], A and B of different classes."""
  a, b = ground_truth.translation_pairs(labels, pairs, seed)
  f_ide_a, f_sty_a = model.disentangle(tf.convert_to_tensor(z[a], tf.float32))
  f_ide_b, f_sty_b = model.disentangle(tf.convert_to_tensor(z[b], tf.float32))
  codes = [model.entangle(f_ide_a, f_sty_a).numpy(), model.entangle(f_ide_a, f_sty_b).numpy(),
           model.entangle(f_ide_b, f_sty_a).numpy()]
  images = [plugin.decode_all(plugged, c) for c in codes]
  return {"pairs": int(pairs),
          "latent": shares(*codes, z[b] - z[a]),
          "pixels": shares(*images, plugin.decode_all(plugged, z[b]) - plugin.decode_all(plugged, z[a]))}
