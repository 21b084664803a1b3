"""Your own images: a folder of class folders, `<data_dir>/<class_name>/*.png|jpg`.

Two layouts: `<data_dir>/train/<class>/...` and `<data_dir>/test/<class>/...` (the split is yours), or
`<data_dir>/<class>/...`, split into class-disjoint train and test classes by a seeded shuffle. Images
are center-cropped to a square, converted to grayscale or RGB and resized (Lanczos) to `image_size`.
"""

import os
import warnings

import numpy as np
from PIL import Image

from fden_tf.data.split import FewShotData, Split, split_classes

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


# Transparent pixels are composited onto this background (white: the paper's datasets draw dark strokes
# or objects on white, and a transparent PNG's colour channels under alpha 0 are often zeros = black).
BACKGROUND = (255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _flatten_alpha(im):
  """RGBA, LA, PA and palette images with a transparent colour -> RGB composited onto BACKGROUND."""
  if im.mode == "P" and "transparency" not in im.info:
    return im.convert("RGB")
  rgba = im.convert("RGBA")
  return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba).convert("RGB")


def to_square_array(image, image_size, channels):
  """A PIL image or uint8 array as float32 [image_size, image_size, channels] in [0, 1]: the central square
  crop, resized with the Lanczos filter.

  Every common PNG/JPEG form: 8-bit L/RGB/CMYK/1-bit; 16-bit grayscale (modes I;16 and I) scaled by 65535,
  not clipped at 255; transparency (RGBA, LA, palette with a transparent colour) composited onto white.
  """
  im = image if isinstance(image, Image.Image) else Image.fromarray(np.squeeze(image))
  w, h = im.size
  side = min(w, h)
  box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
  if im.mode in SIXTEEN_BIT_MODES:  # resized as 32-bit float ("F"), so no precision is lost before scaling
    gray = Image.fromarray(np.asarray(im, np.float32) / 65535.0, mode="F")
    x = np.asarray(gray.crop(box).resize((image_size, image_size), Image.LANCZOS), np.float32)
    x = np.clip(x, 0.0, 1.0)[..., None]
    return np.repeat(x, channels, axis=-1)
  if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info:
    im = _flatten_alpha(im)
  im = im.crop(box).convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.LANCZOS)
  return np.asarray(im, np.float32).reshape(image_size, image_size, channels) / 255.0


def _read_image(path, image_size, channels):
  """One image; anything PIL cannot decode, and a decompression bomb (more pixels than
  PIL.Image.MAX_IMAGE_PIXELS, which PIL only warns about below twice that), is one ValueError naming the
  class folder and the file."""
  where = f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)} (in {path})"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        return to_square_array(im, image_size, channels)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f"image {where} is too large to decode safely ({e}); shrink it or remove it") from None
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"cannot read image {where}: {e}; re-save it as PNG or JPEG or remove it") from None


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
    train_ids, test_ids = split_classes(len(classes), test_fraction, seed)
    train, test = [classes[i] for i in train_ids], [classes[i] for i in test_ids]
  return FewShotData(name, _split(train, image_size, channels), _split(test, image_size, channels))
