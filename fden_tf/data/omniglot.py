"""Omniglot (Lake et al. 2015): 1,623 handwritten characters of 50 alphabets, 20 drawings each.

Two sources, one result:

* a local folder holding the original archives `images_background.zip` and `images_evaluation.zip` (or
  the folders they extract to), read without TensorFlow;
* TFDS (`tfds.load("omniglot")`, what a user with internet gets): its `train` split is
  `images_background` and its `test` split `images_evaluation`.

Two protocols (`split`):

* ``vinyals``, the paper's (and Prototypical Networks'): classes are (character, rotation) pairs, rotations by
  0/90/180/270 degrees being new classes; train on the 4,800 classes of `trainval.txt`, test on the 1,692
  of `test.txt` (split lists of jakesnell/prototypical-networks, one `Alphabet/characterNN/rotDDD` a line).
* ``lake``, Lake's original: learn from the 964 characters of `images_background` only, test on the 659 of
  `images_evaluation`; no rotations. With `train_rotations`, each background character's rotations by
  90/180/270 degrees become training classes of their own (3,856 classes, Vinyals et al.'s augmentation);
  the test characters stay upright, so the test task is Lake's.

Images: the 105x105 1-bit drawings are read as 8-bit grayscale, resized with PIL's Lanczos filter to
`image_size` (32, as the paper's code did; so strokes become anti-aliased grey levels), and inverted so that
ink = 1 on a 0 background, like `glyphs`. Rotations are `np.rot90` (counter-clockwise), as in the paper's code.
"""

import io
import os
import urllib.request
import zipfile

import numpy as np
from PIL import Image

from fden_tf import files
from fden_tf.data import tfds_images
from fden_tf.data.split import FewShotData, Split

ARCHIVES = ("images_background", "images_evaluation")  # TFDS's "train" and "test"
PROTOCOLS = ("vinyals", "lake")
SPLIT_LISTS = ("trainval", "test")
# The one message for train_rotations where it does not apply (any split but Lake's, any other dataset).
ROTATIONS_ONLY_FOR_LAKE = ("train_rotations applies to --dataset=omniglot --split=lake only (Lake's protocol; "
                           "the Vinyals split lists already name their rotations)")
SPLITS_URL = ("https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/"
              "splits/vinyals/{}.txt")
DEFAULT_SPLITS_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "fden_tf", "omniglot_splits")


def _to_image(gray: np.ndarray, image_size: int) -> np.ndarray:
  """A 105x105 uint8 drawing (ink dark) as float32 [image_size, image_size, 1] in [0, 1], ink = 1."""
  im = Image.fromarray(gray).resize((image_size, image_size), Image.LANCZOS)
  return (1.0 - np.asarray(im, np.float32) / 255.0)[..., None]


def _decode_png(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    return np.asarray(im.convert("L"))


def has_archives(data_dir) -> bool:
  """Whether `data_dir` holds both Omniglot archives, zipped or extracted."""
  return bool(data_dir) and all(os.path.exists(os.path.join(data_dir, a + ".zip")) or
                                os.path.isdir(os.path.join(data_dir, a)) for a in ARCHIVES)


def _archive_drawings(data_dir, archive):
  """Yields (character key "Alphabet/characterNN", drawing file name, PNG bytes) of one archive."""
  path = os.path.join(data_dir, archive)
  if os.path.isdir(path):
    for root, _, names in sorted(os.walk(path)):
      for name in sorted(names):
        if name.endswith(".png"):
          key = os.path.relpath(root, path).replace(os.sep, "/")
          with open(os.path.join(root, name), "rb") as f:
            yield key, name, f.read()
    return
  try:
    with zipfile.ZipFile(path + ".zip") as z:
      for member in sorted(z.namelist()):
        parts = member.split("/")
        if member.endswith(".png") and len(parts) == 4 and parts[0] == archive:
          yield f"{parts[1]}/{parts[2]}", parts[3], z.read(member)
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path}.zip is not a readable zip archive ({e})") from None


def read_archives(data_dir, image_size=32) -> dict:
  """{archive: {character key: float32 [20, image_size, image_size, 1]}} from the archives in `data_dir`."""
  if not has_archives(data_dir):
    raise FileNotFoundError(f"--data_dir {data_dir} holds neither images_background.zip and "
                            "images_evaluation.zip nor the folders they extract to")
  characters = {}
  for archive in ARCHIVES:
    drawings = {}
    for key, _, data in _archive_drawings(data_dir, archive):
      try:
        drawings.setdefault(key, []).append(_to_image(_decode_png(data), image_size))
      except OSError as e:
        raise ValueError(f"cannot read {archive}/{key} in {data_dir}: {e}") from None
    if not drawings:
      raise ValueError(f"{data_dir}/{archive} holds no drawings (expected {archive}/<Alphabet>/characterNN/*.png)")
    characters[archive] = {key: np.stack(images) for key, images in drawings.items()}
  return characters


def read_tfds(data_dir=None, image_size=32) -> dict:
  """Same as `read_archives`, from TFDS's `omniglot` (train = images_background, test = images_evaluation)."""
  import tensorflow_datasets as tfds  # imports TensorFlow: only on this path
  try:
    builder = tfds.builder("omniglot", data_dir=data_dir)
    builder.download_and_prepare()
  except Exception as e:  # TFDS raises many kinds (network, checksum, missing files)
    raise ValueError(f"TFDS could not provide omniglot ({type(e).__name__}: {tfds_images.first_line(e)}); "
                     "pass --data_dir=<folder holding images_background.zip and images_evaluation.zip>") from None
  alphabets = builder.info.features["alphabet"].names
  characters = {}
  for archive, tfds_split in zip(ARCHIVES, ("train", "test")):
    drawings = {}
    for ex in tfds.as_numpy(builder.as_dataset(split=tfds_split)):
      key = f"{alphabets[ex['alphabet']]}/character{int(ex['alphabet_char_id']) + 1:02d}"
      drawings.setdefault(key, []).append(_to_image(ex["image"][..., 0], image_size))
    characters[archive] = {key: np.stack(images) for key, images in sorted(drawings.items())}
  return characters


def split_lists(splits_dir=None) -> dict:
  """{"trainval": [...], "test": [...]}: the Vinyals class lists, lines `Alphabet/characterNN/rotDDD`.

  From `splits_dir` (a folder holding trainval.txt and test.txt), or by default from their public
  download, cached under ~/.cache/fden_tf/omniglot_splits (a failed download writes nothing)."""
  if splits_dir is None:
    splits_dir = DEFAULT_SPLITS_CACHE
    for name in SPLIT_LISTS:
      path = os.path.join(splits_dir, name + ".txt")
      if not os.path.exists(path):
        url = SPLITS_URL.format(name)
        try:
          with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        except OSError as e:
          raise ValueError(f"could not download the Vinyals split list {url} ({e}); pass "
                           "--splits_dir=<folder holding trainval.txt and test.txt>") from None
        os.makedirs(splits_dir, exist_ok=True)
        files.atomic_write(path, lambda f, text=text: f.write(text))
  lists = {}
  for name in SPLIT_LISTS:
    path = os.path.join(splits_dir, name + ".txt")
    if not os.path.exists(path):
      raise FileNotFoundError(f"--splits_dir {splits_dir} has no {name}.txt (the Vinyals split lists: "
                              "trainval.txt and test.txt)")
    with open(path) as f:
      lists[name] = [line.strip() for line in f if line.strip()]
    for line in lists[name]:
      if line.count("/") != 2 or not line.rsplit("/", 1)[1].startswith("rot"):
        raise ValueError(f"{path}: {line!r} is not a class line of the form Alphabet/characterNN/rotDDD")
  return lists


def _split(classes) -> Split:
  """classes: [(name, images [20, H, W, 1])] -> a Split with labels in list order."""
  images = np.concatenate([imgs for _, imgs in classes])
  labels = np.repeat(np.arange(len(classes), dtype=np.int32), [len(imgs) for _, imgs in classes])
  return Split(images, labels, [name for name, _ in classes])


def _check_protocol(protocol, train_rotations):
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown Omniglot split {protocol!r}; choose one of {PROTOCOLS}")
  if train_rotations and protocol != "lake":
    raise ValueError(ROTATIONS_ONLY_FOR_LAKE)


def _with_rotations(classes):
  """[(key, images)] -> every class at 0/90/180/270 degrees, as `key/rotDDD` classes (counter-clockwise)."""
  return [(f"{key}/rot{90 * k:03d}", np.rot90(imgs, k=k, axes=(1, 2))) for key, imgs in classes for k in range(4)]


def assemble(characters: dict, protocol: str = "vinyals", lists: dict = None,
             train_rotations: bool = False) -> FewShotData:
  """The class-disjoint FewShotData of `protocol` from `read_archives`/`read_tfds` output; `train_rotations`
  (Lake's protocol only) adds the training characters' rotations as training classes."""
  _check_protocol(protocol, train_rotations)
  if protocol == "lake":
    train, test = ([(key, imgs) for key, imgs in sorted(characters[a].items())] for a in ARCHIVES)
    return FewShotData("omniglot", _split(_with_rotations(train) if train_rotations else train), _split(test))
  by_key = {key: imgs for archive in ARCHIVES for key, imgs in characters[archive].items()}

  def rotated(line):
    key, rotation = line.rsplit("/", 1)
    if key not in by_key:
      raise ValueError(f"the split lists name {key}, which the Omniglot data does not hold")
    degrees = int(rotation[len("rot"):])
    if degrees % 90:
      raise ValueError(f"rotation {rotation} of {key} is not a multiple of 90 degrees")
    return line, np.rot90(by_key[key], k=degrees // 90, axes=(1, 2))

  train, test = ([rotated(line) for line in lists[name]] for name in SPLIT_LISTS)
  overlap = set(lists["trainval"]) & set(lists["test"])
  if overlap:
    raise ValueError(f"the split lists share {len(overlap)} classes (e.g. {sorted(overlap)[0]}); they must be "
                     "disjoint")
  return FewShotData("omniglot", _split(train), _split(test))


def load_omniglot(data_dir=None, protocol="vinyals", splits_dir=None, image_size=32,
                  train_rotations=False) -> FewShotData:
  """Omniglot under `protocol`, from the archives in `data_dir` when it holds them, else from TFDS
  (with `data_dir` as TFDS's data directory)."""
  _check_protocol(protocol, train_rotations)
  lists = split_lists(splits_dir) if protocol == "vinyals" else None  # fail fast, before decoding
  if data_dir and not os.path.isdir(data_dir):
    raise FileNotFoundError(f"--data_dir {data_dir} does not exist or is not a folder")
  if has_archives(data_dir):
    characters = read_archives(data_dir, image_size)
  elif data_dir and not os.path.isdir(os.path.join(data_dir, "omniglot")):
    raise FileNotFoundError(f"--data_dir {data_dir} holds neither images_background.zip and "
                            "images_evaluation.zip (or their folders) nor a TFDS omniglot/ folder")
  else:
    characters = read_tfds(data_dir, image_size)
  return assemble(characters, protocol, lists, train_rotations)
