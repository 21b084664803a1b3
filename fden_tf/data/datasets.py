"""Datasets by name. Every loader returns a `FewShotData` with class-disjoint train and test splits."""

from fden_tf.data import folder
from fden_tf.data import glyphs
from fden_tf.data.split import FewShotData


def _load_glyphs(data_config) -> FewShotData:
  c = data_config
  if c.channels != 1:
    raise ValueError(f"glyphs are grayscale: --channels must be 1, got {c.channels}")
  return glyphs.load_glyphs(num_classes=c.glyphs_classes, num_test_classes=c.glyphs_test_classes,
                            samples_per_class=c.glyphs_samples_per_class, image_size=c.image_size,
                            seed=c.seed)


def _load_folder(data_config) -> FewShotData:
  c = data_config
  return folder.load_image_folder(c.data_dir, c.image_size, c.channels, c.test_fraction, c.seed)


LOADERS = {"glyphs": _load_glyphs, "folder": _load_folder}


def load(data_config) -> FewShotData:
  """Loads `data_config.dataset`; raises ValueError naming the known datasets for an unknown one."""
  try:
    loader = LOADERS[data_config.dataset]
  except KeyError:
    raise ValueError(f"unknown dataset {data_config.dataset!r}; known: {', '.join(sorted(LOADERS))}") from None
  return loader(data_config)
