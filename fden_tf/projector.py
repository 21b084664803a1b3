"""The TensorBoard projector for factor embeddings (z, f_ide, f_sty of held-out samples).

Written the way the TensorBoard 2.21 projector plugin reads it: the tensors in a TF2 checkpoint
(`<name>/.ATTRIBUTES/VARIABLE_VALUE`), `projector_config.pbtxt`, one `metadata.tsv` and one `sprite.png`,
all with paths relative to the log directory (2.21 refuses paths outside it).
"""

import math
import os

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.plugins import projector

MAX_SPRITE_SIDE = 8192  # the projector's limit, in pixels


def sprite(images):
  """[N, H, W, C] in [0, 1] -> uint8 RGB sprite, a ceil(sqrt(N))-square grid of thumbnails, row-major."""
  n, h, w, c = images.shape
  side = math.ceil(math.sqrt(n))
  if side * max(h, w) > MAX_SPRITE_SIDE:
    raise ValueError(f"{n} thumbnails of {h}x{w} exceed the projector's {MAX_SPRITE_SIDE}px sprite")
  rgb = np.repeat(images, 3, axis=-1) if c == 1 else images
  canvas = np.ones((side * h, side * w, 3), np.float32)
  for i in range(n):
    r, col = divmod(i, side)
    canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = rgb[i]
  return (np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def write_metadata(path, columns):
  """columns: {name: list of values}. One row per point; a header only with several columns (the
  projector's rule); tabs and newlines inside values are replaced so rows stay rows."""
  names = list(columns)
  n = len(columns[names[0]])
  clean = lambda v: str(v).replace("\t", " ").replace("\n", " ") or "-"
  with open(path, "w") as f:
    if len(names) > 1:
      f.write("\t".join(names) + "\n")
    for i in range(n):
      f.write("\t".join(clean(columns[name][i]) for name in names) + "\n")


def write_projector(logdir, embeddings, metadata_columns, images):
  """embeddings: {name: [N, D]}; metadata_columns: {column: [N values]}; images: [N, H, W, C] in [0, 1]."""
  os.makedirs(logdir, exist_ok=True)
  variables = {name: tf.Variable(np.asarray(e, np.float32), name=name) for name, e in embeddings.items()}
  tf.train.Checkpoint(**variables).save(os.path.join(logdir, "embeddings.ckpt"))
  write_metadata(os.path.join(logdir, "metadata.tsv"), metadata_columns)
  Image.fromarray(sprite(images)).save(os.path.join(logdir, "sprite.png"))
  config = projector.ProjectorConfig()
  for name in embeddings:
    emb = config.embeddings.add()
    emb.tensor_name = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    emb.metadata_path = "metadata.tsv"
    emb.sprite.image_path = "sprite.png"
    emb.sprite.single_image_dim.extend([images.shape[1], images.shape[2]])
  projector.visualize_embeddings(logdir, config)
