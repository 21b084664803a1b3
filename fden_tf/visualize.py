"""Figures: the image-to-image translation grid of the paper's Figure 4."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MIX_WEIGHTS = (1.0, 0.5, 0.0)  # weight of A's factor: A, halfway, B


def translation_grid(plugged, model, images_a, images_b, weights=MIX_WEIGHTS):
  """Mixes the factors of image pairs (Section 5.3): f~ = w f^A + (1 - w) f^B, for identity and style apart.

  images_a, images_b: [P, H, W, C]. Returns a dict of numpy arrays: "a", "b" (inputs), "rec_a", "rec_b" (the
  plugged network's own reconstructions) and "grid" [P, len(weights), len(weights), H, W, C], where
  grid[p, i, j] decodes E(w_i f_ide^A + (1 - w_i) f_ide^B, w_j f_sty^A + (1 - w_j) f_sty^B).
  """
  z_a, z_b = plugged.encode(images_a), plugged.encode(images_b)
  ide_a, sty_a = model.disentangle(z_a)
  ide_b, sty_b = model.disentangle(z_b)
  rows = []
  for wi in weights:
    f_ide = wi * ide_a + (1.0 - wi) * ide_b
    row = []
    for wj in weights:
      f_sty = wj * sty_a + (1.0 - wj) * sty_b
      row.append(plugged.decode(model.entangle(f_ide, f_sty)).numpy())
    rows.append(np.stack(row, axis=1))
  return {"a": np.asarray(images_a), "b": np.asarray(images_b), "rec_a": plugged.decode(z_a).numpy(),
          "rec_b": plugged.decode(z_b).numpy(), "grid": np.stack(rows, axis=1)}


def _show(ax, image):
  ax.imshow(np.clip(image.squeeze(-1) if image.shape[-1] == 1 else image, 0, 1), cmap="gray", vmin=0, vmax=1)


def save_translation_figure(path, grid, weights=MIX_WEIGHTS):
  """Figure 4's layout, one block of 3 rows per pair: image A, ALI's reconstruction of A, the 3x3 mixing
  grid (rows: identity weight, columns: style weight), ALI's reconstruction of B, image B."""
  pairs, n = len(grid["a"]), len(weights)
  cols = n + 4
  height = pairs * n * 1.0 + 0.6
  fig, axes = plt.subplots(pairs * n, cols, figsize=(cols * 1.0, height), squeeze=False,
                           gridspec_kw={"wspace": 0.08, "hspace": 0.08, "top": 1 - 0.6 / height,
                                        "bottom": 0.01, "left": 0.01, "right": 0.99})
  for ax in axes.flat:
    ax.axis("off")
  for p in range(pairs):
    top, bottom = p * n, p * n + n - 1
    _show(axes[top, 0], grid["a"][p])
    _show(axes[top, 1], grid["rec_a"][p])
    _show(axes[bottom, cols - 2], grid["rec_b"][p])
    _show(axes[bottom, cols - 1], grid["b"][p])
    for i in range(n):
      for j in range(n):
        _show(axes[top + i, 2 + j], grid["grid"][p, i, j])
  for j in range(n):
    axes[0, 2 + j].set_title(f"style {weights[j]:g}A", fontsize=7)
  for ax, title in [(axes[0, 0], "A"), (axes[0, 1], "rec A"), (axes[n - 1, cols - 2], "rec B"),
                    (axes[n - 1, cols - 1], "B")]:
    ax.set_title(title, fontsize=7)
  fig.suptitle("FDEN translation: f_ide mixed down the rows (A, halfway, B), f_sty across the columns\n"
               "(weight of A's factor; rec = the plugged network's own reconstruction)", fontsize=8,
               y=1 - 0.05 / height)
  fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
