"""Oxford Flowers 102 (Nilsback & Zisserman 2008) from the official files, offline.

`--dataset=oxford_flowers102 --data_dir=DIR` reads, in DIR:

* `102flowers.tgz` (`jpg/image_00001.jpg` ... `jpg/image_08189.jpg`), streamed with `tarfile`: nothing is
  extracted to disk; or the extracted `jpg/` folder (used when both are there: no decompression);
* `imagelabels.mat`: MATLAB variable `labels` [1, N], the class (1-102) of `image_{i:05d}.jpg` at column
  i - 1; labels become 0-101 as TFDS's `oxford_flowers102` builder makes them;
* `setid.mat`, when present, is not needed and not read: few-shot work splits by species (the paper: 82
  training and 20 unseen test species, chosen at random), not by the official image split.

Species names are the ones TFDS's builder gives the labels (from its dataset info, no network); without
TFDS, `cat_to_name.json` in DIR (id as a string -> name) where present, else "class_<id>".

A DIR holding TFDS's own prepared data (`DIR/oxford_flowers102/<version>/`) is read by TFDS instead
(fden_tf/data/tfds_images.py), and without --data_dir TFDS downloads the dataset.

Each image gets the preprocessing of every other image loader (`folder.to_square_array`: central square
crop, Lanczos resize, RGB or grayscale, [0, 1]). JPEGs are decoded with PIL's draft mode (the JPEG decoder's
own DCT downscaling to the smallest size not below `image_size`) in a thread pool: PIL releases the GIL while
decoding, so the 8,189 images load in seconds rather than a minute.
"""

import concurrent.futures
import functools
import io
import json
import os
import re
import tarfile
import tempfile

import numpy as np
from PIL import Image

from fden_tf.data import folder
from fden_tf.data.split import FewShotData, Split, split_classes

NAME = "oxford_flowers102"
ARCHIVE = "102flowers.tgz"
IMAGE_FOLDER = "jpg"
LABELS_FILE = "imagelabels.mat"
NAMES_FILE = "cat_to_name.json"
NUM_CLASSES = 102
_IMAGE_NAME = re.compile(r"(?:^|/)image_(\d{5})\.jpg$")


def is_tfds_data_dir(data_dir) -> bool:
  """True when `data_dir` is a TFDS data directory holding a prepared oxford_flowers102."""
  return os.path.isdir(os.path.join(data_dir, NAME))


def _read_labels(data_dir):
  """imagelabels.mat's labels as int [N] in 0..101."""
  path = os.path.join(data_dir, LABELS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{data_dir} has no {LABELS_FILE}: put the official {LABELS_FILE} (from "
                            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/) beside "
                            f"{ARCHIVE}, or point --data_dir at TFDS's data directory")
  import scipy.io  # a dependency of TFDS and of this package (setup.py)
  try:
    labels = scipy.io.loadmat(path)["labels"]
  except (ValueError, KeyError, OSError, TypeError) as e:
    raise ValueError(f"cannot read {path} as the official {LABELS_FILE} (MATLAB variable 'labels'): "
                     f"{type(e).__name__}: {str(e)[:120]}") from None
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if labels.size == 0 or labels.min() < 1 or labels.max() > NUM_CLASSES:
    raise ValueError(f"{path}: labels must be class ids 1..{NUM_CLASSES}, got "
                     f"{labels.min() if labels.size else 'none'}..{labels.max() if labels.size else ''}")
  return labels - 1


def _encoded_images(data_dir):
  """{image number (1-based): JPEG bytes} from the jpg/ folder, else streamed from 102flowers.tgz."""
  found = {}
  jpg = os.path.join(data_dir, IMAGE_FOLDER)
  archive = os.path.join(data_dir, ARCHIVE)
  if os.path.isdir(jpg):
    for name in os.listdir(jpg):
      match = _IMAGE_NAME.search(name)
      if match:
        with open(os.path.join(jpg, name), "rb") as f:
          found[int(match.group(1))] = f.read()
  elif os.path.isfile(archive):
    try:
      with tarfile.open(archive, "r:*") as tar:
        for member in tar:
          match = _IMAGE_NAME.search(member.name)
          if member.isfile() and match:
            found[int(match.group(1))] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
      raise ValueError(f"cannot read {archive} ({type(e).__name__}: {str(e)[:120]}); re-download it") from None
  else:
    raise FileNotFoundError(f"{data_dir} has neither {ARCHIVE} nor an extracted {IMAGE_FOLDER}/ folder")
  if not found:
    raise ValueError(f"{jpg if os.path.isdir(jpg) else archive} holds no {IMAGE_FOLDER}/image_NNNNN.jpg files")
  return found


def _decode(data, number, image_size, channels):
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.draft("RGB" if channels == 3 else "L", (image_size, image_size))  # JPEG only; others ignore it
      return folder.to_square_array(im, image_size, channels)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot decode image_{number:05d}.jpg: {e}") from None


@functools.lru_cache(maxsize=1)
def _tfds_names():
  try:
    import tensorflow_datasets as tfds  # reads the builder's info offline; no TensorFlow import
    with tempfile.TemporaryDirectory() as tmp:
      names = tuple(tfds.builder(NAME, data_dir=tmp).info.features["label"].names)
    return names if len(names) == NUM_CLASSES else None
  except Exception:  # noqa: BLE001 (no TFDS, or one that cannot build its info: fall back to the file)
    return None


def species_names(data_dir=None):
  """The 102 species names, index = label 0..101: TFDS's builder's, else cat_to_name.json's."""
  if _tfds_names():
    return list(_tfds_names())
  path = os.path.join(data_dir or "", NAMES_FILE)
  if data_dir and os.path.isfile(path):
    with open(path) as f:
      mapping = json.load(f)
    return [mapping.get(str(i + 1), f"class_{i + 1}") for i in range(NUM_CLASSES)]
  return [f"class_{i + 1}" for i in range(NUM_CLASSES)]


def load_flowers(data_dir, image_size=64, channels=3, test_fraction=0.2, seed=0, workers=None) -> FewShotData:
  """The official files in `data_dir` (module docstring) as a species-disjoint FewShotData."""
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"--data_dir {data_dir} does not exist or is not a folder")
  labels = _read_labels(data_dir)
  encoded = _encoded_images(data_dir)
  numbers = np.arange(1, len(labels) + 1)
  missing = [n for n in numbers if n not in encoded]
  if missing:
    raise ValueError(f"{LABELS_FILE} labels {len(labels)} images but {len(missing)} of them are not in "
                     f"{data_dir} (first: image_{missing[0]:05d}.jpg)")
  workers = workers or min(8, (os.cpu_count() or 1) * 2)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    images = np.stack(list(pool.map(lambda n: _decode(encoded[n], n, image_size, channels), numbers)))
  del encoded
  present = np.unique(labels)
  if len(present) < 2:
    raise ValueError(f"{LABELS_FILE} has {len(present)} class; a few-shot split needs at least 2")
  names = species_names(data_dir)
  train_classes, test_classes = split_classes(len(present), test_fraction, seed)

  def side(classes):
    chosen = present[classes]
    keep = np.isin(labels, chosen)
    relabel = np.full(NUM_CLASSES, -1, np.int32)
    relabel[chosen] = np.arange(len(chosen))
    return Split(images[keep], relabel[labels[keep]], [names[c] for c in chosen])

  return FewShotData(NAME, side(train_classes), side(test_classes))


def load(data_dir=None, image_size=64, channels=3, test_fraction=0.2, seed=0) -> FewShotData:
  """--dataset=oxford_flowers102: the official files in `data_dir`, TFDS's prepared data when `data_dir`
  is a TFDS data directory, and TFDS (download) without `data_dir`."""
  if not data_dir or is_tfds_data_dir(data_dir):
    from fden_tf.data import tfds_images
    return tfds_images.load_tfds(NAME, data_dir, image_size, channels, test_fraction, seed)
  return load_flowers(data_dir, image_size, channels, test_fraction, seed)
