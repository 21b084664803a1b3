"""The in-memory form every dataset loader returns: one `Split` per side of a class-disjoint split."""

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Split:
  """Images of one side (train or test) of a class-disjoint few-shot split.

  Attributes:
    images: float32 [N, H, W, C] in [0, 1].
    labels: int32 [N], contiguous class ids 0..num_classes-1 within this split.
    class_names: one human-readable name per class id.
    styles: optional float32 [N, S] ground-truth style vector of each sample (glyphs only).
    identities: optional per-class identity parameters, indexable by label, that
      `glyphs.render(identities[label], style)` draws (glyphs only).
  """
  images: np.ndarray
  labels: np.ndarray
  class_names: list
  styles: Optional[np.ndarray] = None
  identities: Optional[np.ndarray] = None

  def __post_init__(self):
    if self.images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape {self.images.shape}")
    if len(self.images) != len(self.labels):
      raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple:
    return tuple(self.images.shape[1:])

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.labels, minlength=self.num_classes)


@dataclasses.dataclass
class FewShotData:
  """A dataset split into disjoint training and test classes."""
  name: str
  train: Split
  test: Split


def split_classes(num_classes: int, test_fraction: float, seed: int):
  """Sorted (train, test) class indices: a seeded shuffle holds out round(test_fraction * num_classes)
  classes (at least one, and at least one left to train on)."""
  if num_classes < 2:
    raise ValueError(f"a few-shot split needs at least 2 classes, got {num_classes}")
  order = np.random.default_rng(seed).permutation(num_classes)
  n_test = min(num_classes - 1, max(1, int(round(test_fraction * num_classes))))
  return np.sort(order[n_test:]), np.sort(order[:n_test])


def _class_name(class_names, label: int) -> str:
  if class_names is not None and label < len(class_names) and str(class_names[label]) != str(label):
    return f"class {class_names[label]!r}"
  return f"class {label}"


def check_episode_shape(labels: np.ndarray, way: int, shot: int, query: int, split_name: str = "this split",
                        flag_prefix: str = "", class_names=None):
  """Raises ValueError, naming the flag to change (--<flag_prefix>way etc.), when C-way K-shot episodes with
  Q queries per class cannot be drawn from `labels`; the smallest class by its name when `class_names`
  (one per label) are given, e.g. an image folder's subfolder. Returns the per-class sample counts."""
  labels = np.asarray(labels)
  counts = np.bincount(labels) if labels.size else np.zeros(0, np.int64)
  if way < 1 or shot < 1 or query < 1:
    raise ValueError(f"way, shot and query must be >= 1, got way={way} shot={shot} query={query}")
  if way > len(counts):
    raise ValueError(f"--{flag_prefix}way={way} is larger than the {len(counts)} classes of {split_name}")
  if shot + query > counts.min():
    raise ValueError(f"--{flag_prefix}shot + --{flag_prefix}query = {shot + query} exceeds the "
                     f"{counts.min()} samples of the smallest class of {split_name} "
                     f"({_class_name(class_names, int(counts.argmin()))})")
  return counts
