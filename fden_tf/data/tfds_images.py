"""Any TFDS image-classification dataset by name (`oxford_flowers102`, `cifar100`, ...), as a class-disjoint
few-shot split.

Every TFDS split is pooled (`split="all"`): a few-shot split is over classes, not over TFDS's train/test
images. The classes are then divided by a seeded shuffle, `test_fraction` of them held out (for
oxford_flowers102's 102 species, 0.2 gives the paper's 82 train / 20 test). Each image is center-cropped to a
square, resized with PIL's Lanczos filter to `image_size` and converted to grayscale or RGB, as image folders
are (fden_tf/data/folder.py).
"""

import numpy as np

from fden_tf.data import folder
from fden_tf.data.split import FewShotData, Split, split_classes


def first_line(e):
  """An exception's message as one short line, for the one-line errors TFDS failures become."""
  return (str(e).splitlines() or [""])[0][:200]


def load_tfds(name, data_dir=None, image_size=64, channels=3, test_fraction=0.2, seed=0) -> FewShotData:
  import tensorflow_datasets as tfds  # imports TensorFlow: only on this path
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"unknown dataset {name!r}: neither built in (glyphs, omniglot, folder) nor a TFDS "
                     "dataset") from None
  image_key, label_key = builder.info.supervised_keys or (None, None)
  label_feature = builder.info.features[label_key] if label_key in builder.info.features else None
  if image_key is None or not isinstance(label_feature, tfds.features.ClassLabel):
    raise ValueError(f"TFDS dataset {name!r} is not an image-classification dataset (it has no (image, "
                     "label) supervised keys)")
  try:
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="all", as_supervised=True)
  except Exception as e:  # TFDS raises many kinds (network, checksum, missing manual files)
    raise ValueError(f"TFDS could not provide {name} ({type(e).__name__}: {first_line(e)})") from None
  images, labels = [], []
  for image, label in tfds.as_numpy(dataset):
    images.append(folder.to_square_array(image, image_size, channels))
    labels.append(int(label))
  if not images:
    raise ValueError(f"TFDS dataset {name} holds no images")
  images, labels = np.stack(images), np.asarray(labels)
  present = np.unique(labels)
  if len(present) < 2:
    raise ValueError(f"TFDS dataset {name} has {len(present)} class; a few-shot split needs at least 2")
  train_classes, test_classes = split_classes(len(present), test_fraction, seed)
  names = label_feature.names

  def side(classes):
    chosen = present[classes]
    keep = np.isin(labels, chosen)
    relabel = {c: i for i, c in enumerate(chosen)}
    return Split(images[keep], np.array([relabel[c] for c in labels[keep]], np.int32),
                 [names[c] for c in chosen])

  return FewShotData(name, side(train_classes), side(test_classes))
