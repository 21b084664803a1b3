"""Figures: the image-to-image translation grid of the paper's Figure 4."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
  grid (rows: identity weight, columns: style weight), ALI's reconstruction of B, image B.

  Drawn as one image (`translation_mosaic`) with labels on top: one axes instead of a hundred keeps it fast.
  """
  mosaic = translation_mosaic(grid, gap=2)
  h, w = grid["a"].shape[1:3]
  fig = plt.figure(figsize=(mosaic.shape[1] / 40 + 0.4, mosaic.shape[0] / 40 + 0.9))
  ax = fig.add_axes([0.02, 0.02, 0.96, 0.96 - 0.9 / (mosaic.shape[0] / 40 + 0.9)])
  _show(ax, mosaic)
  ax.axis("off")
  titles = ["A", "rec A"] + [f"style {x:g}A" for x in weights] + ["rec B", "B"]
  for col, title in enumerate(titles):
    ax.text(col * (w + 2) + w / 2, -3, title, ha="center", va="bottom", fontsize=7)
  for i, x in enumerate(weights):
    ax.text(2 * (w + 2) + 1, i * (h + 2) + h - 1, f"ide {x:g}A", ha="left", va="bottom", fontsize=5,
            color="yellow")
  fig.suptitle("FDEN translation: f_ide mixed down the rows (A, halfway, B), f_sty across the columns\n"
               "(weight of A's factor; rec = the plugged network's own reconstruction)", fontsize=8)
  fig.savefig(path, format="png", dpi=100)
  plt.close(fig)


def translation_mosaic(grid, gap=0):
  """Figure 4's layout as one image [H', W', C]: one block of 3 rows per pair, `gap` pixels of mid-grey
  between cells. Blank cells are black for grayscale images and white for colour ones, where black cells
  beside dark photos (flowers on dark foliage) read as data."""
  a = grid["a"]
  pairs, h, w, c = a.shape
  n = grid["grid"].shape[1]
  cols = n + 4
  blank = 1.0 if c == 3 else 0.0
  canvas = np.full((pairs * n * (h + gap) - gap, cols * (w + gap) - gap, c), 0.5, np.float32)
  for row in range(pairs * n):
    for col in range(cols):
      canvas[row * (h + gap):row * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = blank

  def put(row, col, image):
    canvas[row * (h + gap):row * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = image

  for p in range(pairs):
    top = p * n
    put(top, 0, a[p])
    put(top, 1, grid["rec_a"][p])
    put(top + n - 1, cols - 2, grid["rec_b"][p])
    put(top + n - 1, cols - 1, grid["b"][p])
    for i in range(n):
      for j in range(n):
        put(top + i, 2 + j, grid["grid"][p, i, j])
  return canvas


def image_pairs(images, reconstructions):
  """[N, H, W, C] twice -> [N, H, 2W, C]: each image beside its reconstruction."""
  return np.concatenate([np.asarray(images), np.asarray(reconstructions)], axis=2)


def save_tsne_figure(path, f_ide, f_sty, labels, class_names=None, seed=0):
  """The paper's Figure 3: t-SNE (scikit-learn) of f_ide and of f_sty side by side, coloured by class."""
  from sklearn.manifold import TSNE
  fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
  perplexity = max(2.0, min(15.0, (len(labels) - 1) / 3))
  for ax, data, title in [(axes[0], f_ide, "(a) identity factors f_ide"), (axes[1], f_sty, "(b) style factors f_sty")]:
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(data)
    for k, c in enumerate(np.unique(labels)):
      pick = labels == c
      name = class_names[c] if class_names is not None else str(c)
      ax.scatter(xy[pick, 0], xy[pick, 1], s=14, color=plt.cm.tab10(k % 10), label=name)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[1].legend(fontsize=7, loc="best")
  fig.suptitle(f"t-SNE of held-out samples: {len(np.unique(labels))} classes x "
               f"{len(labels) // len(np.unique(labels))} samples", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, format="png", dpi=100)
  plt.close(fig)


CURVE_PANELS = {
    "ali": [("d_loss", "g_loss"), ("reconstruction",), ("d_real", "d_fake")],
    "fden": [("l_r", "l_c", "l_m"), ("accuracy",), ("grad_norm_u", "grad_norm_m")],
}


def save_curves_figure(path, logs):
  """Loss terms and accuracy over steps. logs: {"ali": [records], "fden": [records]} from train_log.jsonl."""
  stages = [s for s in ("ali", "fden") if logs.get(s)]
  fig, axes = plt.subplots(max(1, len(stages)), 3, figsize=(12, 3.2 * max(1, len(stages))), squeeze=False)
  for row, stage in enumerate(stages):
    records = [r for r in logs[stage] if "event" not in r]
    steps = [r["step"] for r in records]
    for col, keys in enumerate(CURVE_PANELS[stage]):
      ax = axes[row, col]
      for key in keys:
        ax.plot(steps, [r.get(key, np.nan) for r in records], label=key)
      ax.set_title(f"{stage.upper()}: {', '.join(keys)}", fontsize=9)
      ax.set_xlabel("step", fontsize=8)
      ax.legend(fontsize=7)
      if stage == "ali" and col == 0:
        ax.set_yscale("symlog")
  fig.tight_layout()
  fig.savefig(path, format="png", dpi=100)
  plt.close(fig)


def image_grid(images, columns=16, gap=2):
  """[N, H, W, C] -> one image, `columns` a row, `gap` pixels of mid-grey between cells."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  canvas = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, c), 0.5, np.float32)
  for i, image in enumerate(images):
    r, k = divmod(i, columns)
    canvas[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = image
  return canvas


def save_samples_figure(path, samples, real, reconstructions=None):
  """The plugged generator's prior samples G_x(z), z ~ N(0, I), under real images and, when given, the
  network's reconstructions of those same images (row k of one is row k of the other)."""
  panels = [(image_grid(real), "held-out images" if reconstructions is not None else "real training images")]
  if reconstructions is not None:
    panels.append((image_grid(reconstructions), "reconstructions G_x(G_z(x)) of the images above"))
  panels.append((image_grid(samples), "prior samples G_x(z), z ~ N(0, I)"))
  width = max(image.shape[1] for image, _ in panels)
  height = sum(image.shape[0] for image, _ in panels)
  fig, axes = plt.subplots(len(panels), 1, figsize=(width / 40 + 0.4, height / 40 + 0.5 * len(panels)))
  for ax, (image, title) in zip(axes, panels):
    _show(ax, image)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
  fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
