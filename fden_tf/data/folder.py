"""Your own images: a folder of class folders, `<data_dir>/<class_name>/*.png|jpg`.

Two layouts: `<data_dir>/train/<class>/...` and `<data_dir>/test/<class>/...` (the split is yours), or
`<data_dir>/<class>/...`, split into class-disjoint train and test classes by a seeded shuffle. Images
are converted to grayscale or RGB and resized (Lanczos) to a square `image_size`.
"""

import os

import numpy as np
from PIL import Image

from fden_tf.data.split import FewShotData, Split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "test")


def _class_folders(folder):
  """Sorted (class_name, [image paths]) of every sub-folder holding at least one image."""
  found = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if os.path.isdir(path):
      files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
      if files:
        found.append((name, files))
  if not found:
    raise ValueError(f"{folder} holds no class folders with images (expected {folder}/<class_name>/*.png)")
  return found


def _read_image(path, image_size, channels):
  try:
    with Image.open(path) as im:
      im = im.convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.LANCZOS)
      return np.asarray(im, np.float32).reshape(image_size, image_size, channels) / 255.0
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from None


def _split(classes, image_size, channels):
  images, labels = [], []
  for label, (_, files) in enumerate(classes):
    images.extend(_read_image(f, image_size, channels) for f in files)
    labels.extend([label] * len(files))
  return Split(np.stack(images), np.asarray(labels, np.int32), [name for name, _ in classes])


def load_image_folder(data_dir, image_size=32, channels=1, test_fraction=0.2, seed=0,
                      name="folder") -> FewShotData:
  """Reads `data_dir` in either layout (module docstring) into a class-disjoint FewShotData."""
  if not data_dir:
    raise ValueError(f"--dataset={name} needs --data_dir=<folder of class_name/*.png>")
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"--data_dir {data_dir} does not exist or is not a folder")
  present = [s for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(data_dir, s))]
  if present:
    missing = [s for s in SPLIT_FOLDERS if s not in present]
    if missing:
      raise ValueError(f"{data_dir} has a {present[0]}/ split but no {missing[0]}/ split; add "
                       f"{os.path.join(data_dir, missing[0])}/<class>/*.png or remove {present[0]}/ to let "
                       "the classes be split automatically")
    train = _class_folders(os.path.join(data_dir, "train"))
    test = _class_folders(os.path.join(data_dir, "test"))
  else:
    classes = _class_folders(data_dir)
    if len(classes) < 2:
      raise ValueError(f"{data_dir} has {len(classes)} class folder; a few-shot split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(classes))
    n_test = min(len(classes) - 1, max(1, int(round(test_fraction * len(classes)))))
    test = [classes[i] for i in sorted(order[:n_test])]
    train = [classes[i] for i in sorted(order[n_test:])]
  return FewShotData(name, _split(train, image_size, channels), _split(test, image_size, channels))
