"""Dataset loaders on small data the tests write: Omniglot (archives, extracted folders, TFDS mock), any TFDS
image-classification dataset (mock oxford_flowers102), and the real Omniglot's split lists where present."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from fden_tf import config as config_lib
from fden_tf.data import datasets
from fden_tf.data import omniglot

REAL_OMNIGLOT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "omniglot")
# Small fake Omniglot: {archive: {alphabet: characters}}, 20 drawings each, 105x105 1-bit like the original.
ALPHABETS = {"images_background": {"Latin": 3, "Greek": 2}, "images_evaluation": {"Runic": 2}}


def _drawing(seed):
  """A 105x105 1-bit drawing, ink (0) a random thick stroke on white (1); asymmetric, so rotations differ."""
  rng = np.random.default_rng(seed)
  canvas = np.ones((105, 105), bool)
  r, c = rng.integers(10, 40, size=2)
  canvas[r:r + 50, c:c + 8] = False
  canvas[r:r + 8, c:c + 40] = False
  return Image.fromarray(canvas)


def _png(image):
  buf = io.BytesIO()
  image.save(buf, format="PNG")
  return buf.getvalue()


def write_fake_omniglot(root, zipped=True):
  """The two archives under `root` (zipped or extracted) and the Vinyals-style lists under root/splits."""
  character_id, keys = 0, {}
  for archive, alphabets in ALPHABETS.items():
    members = {}
    for alphabet, count in alphabets.items():
      for n in range(1, count + 1):
        character_id += 1
        keys.setdefault(archive, []).append(f"{alphabet}/character{n:02d}")
        for drawer in range(1, 21):
          members[f"{archive}/{alphabet}/character{n:02d}/{character_id:04d}_{drawer:02d}.png"] = \
              _png(_drawing(character_id * 100 + drawer))
    if zipped:
      with zipfile.ZipFile(root / f"{archive}.zip", "w") as z:
        for name, data in members.items():
          z.writestr(name, data)
    else:
      for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
  # Vinyals-style: the split mixes archives; one background character goes to test, like Gurmukhi.
  every = keys["images_background"] + keys["images_evaluation"]
  test_characters = ["Greek/character02"] + keys["images_evaluation"]
  lists = {"trainval": [k for k in every if k not in test_characters], "test": test_characters}
  (root / "splits").mkdir()
  for name, characters in lists.items():
    (root / "splits" / f"{name}.txt").write_text(
        "".join(f"{k}/rot{r:03d}\n" for k in characters for r in (0, 90, 180, 270)))
  return lists


@pytest.fixture
def fake_omniglot(tmp_path):
  lists = write_fake_omniglot(tmp_path)
  return tmp_path, lists


def _check_images(split, size=32, channels=1):
  assert split.images.shape[1:] == (size, size, channels) and split.images.dtype == np.float32
  assert split.images.min() >= 0.0 and split.images.max() <= 1.0


def test_omniglot_vinyals_has_rotations_as_classes_and_disjoint_splits(fake_omniglot):
  root, lists = fake_omniglot
  data = omniglot.load_omniglot(str(root), "vinyals", str(root / "splits"), image_size=32)
  assert data.train.num_classes == 4 * len(lists["trainval"]) == 16
  assert data.test.num_classes == 4 * len(lists["test"]) == 12
  assert not set(data.train.class_names) & set(data.test.class_names)
  for split in (data.train, data.test):
    _check_images(split)
    assert (split.class_counts() == 20).all()
  # Ink is 1 on a 0 background (the drawings are mostly white paper).
  assert data.train.images.mean() < 0.5
  # Class "X/rot090" holds X's drawings rotated by 90 degrees, drawing for drawing.
  names = data.test.class_names
  upright = data.test.images[data.test.labels == names.index("Runic/character01/rot000")]
  for degrees in (90, 180, 270):
    rotated = data.test.images[data.test.labels == names.index(f"Runic/character01/rot{degrees:03d}")]
    np.testing.assert_array_equal(rotated, np.rot90(upright, k=degrees // 90, axes=(1, 2)))
  assert not np.array_equal(upright, np.rot90(upright, k=1, axes=(1, 2)))


def test_omniglot_lake_learns_from_background_and_tests_on_evaluation(fake_omniglot):
  root, _ = fake_omniglot
  data = omniglot.load_omniglot(str(root), "lake", image_size=28)
  assert data.train.num_classes == 5 and data.test.num_classes == 2  # no rotations
  assert all(name.split("/")[0] in ("Latin", "Greek") for name in data.train.class_names)
  assert all(name.split("/")[0] == "Runic" for name in data.test.class_names)
  _check_images(data.train, size=28)


def test_omniglot_lake_train_rotations_add_rotated_training_classes_only(fake_omniglot):
  root, _ = fake_omniglot
  upright = omniglot.load_omniglot(str(root), "lake", image_size=28)
  rotated = omniglot.load_omniglot(str(root), "lake", image_size=28, train_rotations=True)
  assert rotated.train.num_classes == 4 * upright.train.num_classes == 20
  assert rotated.train.class_names[:4] == [f"{upright.train.class_names[0]}/rot{d:03d}" for d in (0, 90, 180, 270)]
  first = upright.train.images[upright.train.labels == 0]
  for k in range(4):  # class 4c + k is character c turned k quarter turns counter-clockwise
    np.testing.assert_array_equal(rotated.train.images[rotated.train.labels == k],
                                  np.rot90(first, k=k, axes=(1, 2)))
  np.testing.assert_array_equal(rotated.test.images, upright.test.images)  # Lake's test task is unchanged
  assert rotated.test.class_names == upright.test.class_names
  with pytest.raises(ValueError, match="applies to --dataset=omniglot --split=lake only"):
    omniglot.load_omniglot(str(root), "vinyals", str(root / "splits"), train_rotations=True)
  with pytest.raises(ValueError, match="applies to --dataset=omniglot --split=lake only"):
    datasets.load(config_lib.DataConfig(dataset="glyphs", train_rotations=True))


def test_omniglot_extracted_folders_read_the_same_as_the_zips(tmp_path, fake_omniglot):
  root, _ = fake_omniglot
  extracted = tmp_path / "extracted"
  extracted.mkdir()
  write_fake_omniglot(extracted, zipped=False)
  a = omniglot.load_omniglot(str(root), "vinyals", str(root / "splits"))
  b = omniglot.load_omniglot(str(extracted), "vinyals", str(root / "splits"))
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert a.test.class_names == b.test.class_names


def test_omniglot_through_the_config_loader_and_its_bad_inputs(fake_omniglot, tmp_path):
  root, _ = fake_omniglot
  c = config_lib.DataConfig(dataset="omniglot", data_dir=str(root), splits_dir=str(root / "splits"))
  assert datasets.load(c).train.num_classes == 16
  with pytest.raises(ValueError, match="grayscale"):
    datasets.load(config_lib.DataConfig(dataset="omniglot", data_dir=str(root), channels=3))
  with pytest.raises(ValueError, match="unknown Omniglot split 'nope'"):
    omniglot.load_omniglot(str(root), "nope")
  with pytest.raises(FileNotFoundError, match="holds neither images_background.zip"):
    omniglot.load_omniglot(str(tmp_path / "splits"), "lake")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "trainval.txt").write_text("Latin/character01/rot000\n")
  with pytest.raises(FileNotFoundError, match="has no test.txt"):
    omniglot.split_lists(str(tmp_path / "bad"))
  (tmp_path / "bad" / "test.txt").write_text("Latin/character02\n")
  with pytest.raises(ValueError, match="not a class line"):
    omniglot.split_lists(str(tmp_path / "bad"))
  (tmp_path / "bad" / "test.txt").write_text("Latin/character02/rot000\n")
  (tmp_path / "bad" / "trainval.txt").write_text("Latin/character09/rot000\n")
  with pytest.raises(ValueError, match="does not hold"):
    omniglot.load_omniglot(str(root), "vinyals", str(tmp_path / "bad"))
  (tmp_path / "bad" / "trainval.txt").write_text("Latin/character02/rot000\n")
  with pytest.raises(ValueError, match="must be disjoint"):
    omniglot.load_omniglot(str(root), "vinyals", str(tmp_path / "bad"))


def test_split_lists_download_failure_is_one_clear_error_and_writes_nothing(monkeypatch, tmp_path):
  cache = tmp_path / "cache"
  monkeypatch.setattr(omniglot, "DEFAULT_SPLITS_CACHE", str(cache))

  def offline(url, timeout):
    raise OSError("network unreachable")

  monkeypatch.setattr(omniglot.urllib.request, "urlopen", offline)
  with pytest.raises(ValueError, match="could not download .*trainval.txt.*--splits_dir"):
    omniglot.split_lists()
  assert not cache.exists() or not list(cache.iterdir())


def test_split_lists_are_downloaded_once_and_cached(monkeypatch, tmp_path):
  monkeypatch.setattr(omniglot, "DEFAULT_SPLITS_CACHE", str(tmp_path / "cache"))
  calls = []

  class Response(io.BytesIO):
    def __enter__(self):
      return self

    def __exit__(self, *args):
      pass

  def fake(url, timeout):
    calls.append(url)
    return Response(b"A/character01/rot000\n" if "trainval" in url else b"B/character01/rot090\n")

  monkeypatch.setattr(omniglot.urllib.request, "urlopen", fake)
  assert omniglot.split_lists() == {"trainval": ["A/character01/rot000"], "test": ["B/character01/rot090"]}
  assert omniglot.split_lists()["test"] == ["B/character01/rot090"]
  assert len(calls) == 2 and calls[0].startswith("https://raw.githubusercontent.com/jakesnell/")


def test_omniglot_from_tfds_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    # The mock's random examples decide which characters exist: list some of them, as trainval and test.
    characters = omniglot.read_tfds(image_size=32)
    keys = sorted(k for archive in omniglot.ARCHIVES for k in characters[archive])
    assert len(keys) >= 4
    (tmp_path / "trainval.txt").write_text("".join(f"{k}/rot000\n{k}/rot180\n" for k in keys[:2]))
    (tmp_path / "test.txt").write_text("".join(f"{k}/rot090\n" for k in keys[2:4]))
    data = omniglot.load_omniglot(None, "vinyals", str(tmp_path))
    lake = omniglot.load_omniglot(None, "lake")
  assert data.train.num_classes == 4 and data.test.num_classes == 2
  _check_images(data.train)
  assert len(lake.train.images) == 60 and len(lake.test.images) == 60  # TFDS train = background, test = eval


def test_any_tfds_classification_dataset_splits_by_class(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  c = config_lib.DataConfig(dataset="oxford_flowers102", image_size=64, channels=3, seed=3)
  with tfds.testing.mock_data(num_examples=800, policy=tfds.testing.MockPolicy.USE_CODE):
    data = datasets.load(c)
    again = datasets.load(c)
  assert data.train.num_classes + data.test.num_classes == 102
  assert (data.train.num_classes, data.test.num_classes) == (82, 20)  # the paper's flowers split
  assert not set(data.train.class_names) & set(data.test.class_names)
  _check_images(data.train, size=64, channels=3)
  _check_images(data.test, size=64, channels=3)
  assert data.test.class_names == again.test.class_names  # seeded
  assert set(np.unique(data.test.labels)) == set(range(20))
  with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset_xyz'"):
    datasets.load(config_lib.DataConfig(dataset="no_such_dataset_xyz"))


@pytest.mark.skipif(not os.path.exists(os.path.join(REAL_OMNIGLOT, "images_background.zip")),
                    reason="the real Omniglot is not on this machine")
def test_real_omniglot_split_lists_cover_the_archives():
  """Without decoding 32,460 images: the lists' characters all exist, and the counts are the standard ones."""
  lists = omniglot.split_lists(os.path.join(REAL_OMNIGLOT, "splits", "vinyals"))
  assert (len(lists["trainval"]), len(lists["test"])) == (4800, 1692)
  present = {}
  for archive in omniglot.ARCHIVES:
    with zipfile.ZipFile(os.path.join(REAL_OMNIGLOT, archive + ".zip")) as z:
      names = [m.split("/") for m in z.namelist() if m.endswith(".png")]
    present[archive] = {f"{p[1]}/{p[2]}" for p in names}
    assert all(len([n for n in names if f"{n[1]}/{n[2]}" == k]) == 20 for k in list(present[archive])[:5])
  assert (len(present["images_background"]), len(present["images_evaluation"])) == (964, 659)
  everything = present["images_background"] | present["images_evaluation"]
  for name in ("trainval", "test"):
    assert {line.rsplit("/", 1)[0] for line in lists[name]} <= everything
  assert not set(lists["trainval"]) & set(lists["test"])


def _folder_image(tmp_path, name, image):
  path = tmp_path / "cls_a" / name
  path.parent.mkdir(exist_ok=True)
  image.save(path)
  return str(path)


def test_folder_images_of_every_common_png_form_read_correctly(tmp_path):
  from fden_tf.data import folder
  ramp16 = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
  path = _folder_image(tmp_path, "sixteen.png", Image.fromarray(ramp16))
  assert Image.open(path).mode in ("I;16", "I")
  x = folder._read_image(path, 16, 1)
  np.testing.assert_allclose(x[..., 0], ramp16 / 65535.0, atol=2e-3)  # a ramp, not saturated to 1
  assert 0.3 < x.mean() < 0.7
  rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent, colour channels black ...
  rgba[4:12, 4:12] = (0, 0, 0, 255)       # ... but an opaque black square
  x = folder._read_image(_folder_image(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")), 16, 1)
  assert x[0, 0, 0] == 1.0 and x[8, 8, 0] == 0.0  # transparent -> white background, the square stays black
  x = folder._read_image(_folder_image(tmp_path, "la.png", Image.fromarray(rgba[..., [0, 3]], "LA")), 16, 3)
  assert x.shape == (16, 16, 3) and x[0, 0].tolist() == [1.0, 1.0, 1.0] and x[8, 8].tolist() == [0, 0, 0]
  palette = Image.fromarray((np.arange(256).reshape(16, 16) % 2).astype(np.uint8), "P")
  palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
  x = folder._read_image(_folder_image(tmp_path, "p.png", palette), 16, 3)
  assert x[0, 0].tolist() == [1, 0, 0] and x[0, 1].tolist() == [0, 0, 1]


def test_folder_images_that_cannot_be_read_safely_are_one_error_naming_the_class_folder(tmp_path,
                                                                                          monkeypatch):
  from fden_tf.data import folder
  path = _folder_image(tmp_path, "big.png", Image.new("L", (64, 64)))
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: > 2x the limit, PIL's bomb error
  with pytest.raises(ValueError, match=r"cls_a/big.png .*too large"):
    folder._read_image(path, 16, 1)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x: PIL only warns
  with pytest.raises(ValueError, match="too large"):
    folder._read_image(path, 16, 1)
  (tmp_path / "cls_a" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(ValueError, match=r"cannot read image cls_a/torn.png"):
    folder._read_image(str(tmp_path / "cls_a" / "torn.png"), 16, 1)
