"""Datasets by name. Every loader returns a `FewShotData` with class-disjoint train and test splits.

Built in: `glyphs` (embedded, offline), `omniglot` (fden_tf/data/omniglot.py: the original archives in
--data_dir, or TFDS), `oxford_flowers102` (fden_tf/data/flowers.py: the official 102flowers.tgz and
imagelabels.mat in --data_dir, or TFDS), `folder` (your own class folders). Any other name is looked up in TFDS
(fden_tf/data/tfds_images.py), e.g. `oxford_flowers102`.
"""

from fden_tf.data import flowers
from fden_tf.data import folder
from fden_tf.data import glyphs
from fden_tf.data import omniglot
from fden_tf.data import tfds_images
from fden_tf.data.split import FewShotData


def _load_glyphs(c) -> FewShotData:
  return glyphs.load_glyphs(num_classes=c.glyphs_classes, num_test_classes=c.glyphs_test_classes,
                            samples_per_class=c.glyphs_samples_per_class, image_size=c.image_size,
                            seed=c.seed)


def _load_omniglot(c) -> FewShotData:
  return omniglot.load_omniglot(c.data_dir, c.split, c.splits_dir, c.image_size, c.train_rotations)


def _load_folder(c) -> FewShotData:
  return folder.load_image_folder(c.data_dir, c.image_size, c.channels, c.test_fraction, c.seed)


def _load_flowers(c) -> FewShotData:
  return flowers.load(c.data_dir, c.image_size, c.channels, c.test_fraction, c.seed)


LOADERS = {"glyphs": _load_glyphs, "omniglot": _load_omniglot, "folder": _load_folder,
           flowers.NAME: _load_flowers}
GRAYSCALE = ("glyphs", "omniglot")

# (image_size, channels) a dataset gets when the flags do not say: the paper's 32x32 grayscale for the
# character datasets (ALI's SVHN model), 64x64 RGB for natural images (its CelebA model), as for flowers.
DEFAULT_IMAGE_SHAPE = {"glyphs": (32, 1), "omniglot": (32, 1), "folder": (32, 1)}
TFDS_IMAGE_SHAPE = (64, 3)


def default_image_shape(name):
  return DEFAULT_IMAGE_SHAPE.get(name, TFDS_IMAGE_SHAPE)


def load(data_config) -> FewShotData:
  """Loads `data_config.dataset`: a built-in loader, or else a TFDS dataset of that name."""
  c = data_config
  if c.dataset in GRAYSCALE and c.channels != 1:
    raise ValueError(f"{c.dataset} is grayscale: --channels must be 1, got {c.channels}")
  if c.train_rotations and c.dataset != "omniglot":  # the omniglot loader checks the split
    raise ValueError(omniglot.ROTATIONS_ONLY_FOR_LAKE)
  if c.dataset in LOADERS:
    return LOADERS[c.dataset](c)
  return tfds_images.load_tfds(c.dataset, c.data_dir, c.image_size, c.channels, c.test_fraction, c.seed)
