"""Oxford Flowers 102 from the official files (fden_tf/data/flowers.py), the TFDS dependency fix, the flowers
preset choice and the raw-pixel few-shot baseline. All on a tiny official-layout dataset the tests write."""

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fden_tf import config as config_lib
from fden_tf import pipeline
from fden_tf.data import datasets
from fden_tf.data import episodes
from fden_tf.data import flowers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Class ids (1-based, as in imagelabels.mat) and images per class; 77 is the passion flower.
CLASSES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 77]
PER_CLASS = [3, 4, 3, 5, 3, 3, 4, 3, 3, 4]


def _colour(class_id):
  rng = np.random.default_rng(class_id)
  return rng.integers(20, 236, size=3)


def _official_layout(folder, archive=True, labels_file=True):
  """Writes jpg/image_NNNNN.jpg (as 102flowers.tgz, or extracted) and imagelabels.mat: each image one solid
  colour of its class, of varying non-square sizes, the classes interleaved as in the real file."""
  labels = [c for c, n in zip(CLASSES, PER_CLASS) for _ in range(n)]
  labels = list(np.random.default_rng(0).permutation(labels))
  os.makedirs(folder, exist_ok=True)
  if labels_file:
    scipy.io.savemat(os.path.join(folder, "imagelabels.mat"), {"labels": np.array([labels], np.uint8)})
  jpegs = {}
  for i, c in enumerate(labels, start=1):
    buf = io.BytesIO()
    Image.new("RGB", (40 + 3 * (i % 5), 30 + 2 * (i % 3)), tuple(int(v) for v in _colour(c))).save(
        buf, "JPEG", quality=95)
    jpegs[f"jpg/image_{i:05d}.jpg"] = buf.getvalue()
  if archive:
    with tarfile.open(os.path.join(folder, "102flowers.tgz"), "w:gz") as tar:
      for name, data in jpegs.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  else:
    os.makedirs(os.path.join(folder, "jpg"))
    for name, data in jpegs.items():
      with open(os.path.join(folder, name), "wb") as f:
        f.write(data)
  return np.array(labels)


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("flowers_tgz"))
  labels = _official_layout(folder)
  return folder, labels, flowers.load_flowers(folder, image_size=16, channels=3, test_fraction=0.2, seed=0)


def test_archive_reader_counts_split_shape_range_and_labels(tiny_archive):
  _, labels, data = tiny_archive
  assert data.name == "oxford_flowers102"
  assert (data.train.num_classes, data.test.num_classes) == (8, 2)  # round(0.2 * 10) unseen species
  assert len(data.train.images) + len(data.test.images) == len(labels) == sum(PER_CLASS)
  names = flowers.species_names()
  assert names[76] == "passion flower" and len(names) == 102  # TFDS's names, offline
  expected_counts = {names[c - 1]: n for c, n in zip(CLASSES, PER_CLASS)}
  for split in (data.train, data.test):
    assert split.images.shape[1:] == (16, 16, 3) and split.images.dtype == np.float32
    assert split.images.min() >= 0.0 and split.images.max() <= 1.0
    assert set(split.class_names).isdisjoint(set(data.test.class_names if split is data.train else
                                                 data.train.class_names))
    for k, name in enumerate(split.class_names):
      assert split.class_counts()[k] == expected_counts[name]
      class_id = CLASSES[[names[c - 1] for c in CLASSES].index(name)]
      # Each image is its class's solid colour: the labels follow imagelabels.mat's columns.
      means = split.images[split.labels == k].mean(axis=(1, 2)) * 255
      np.testing.assert_allclose(means, np.broadcast_to(_colour(class_id), means.shape), atol=4)


def test_species_split_is_seeded_and_matches_split_classes(tiny_archive, tmp_path):
  folder, _, data = tiny_archive
  again = flowers.load_flowers(folder, image_size=16, channels=3, seed=0)
  other = flowers.load_flowers(folder, image_size=16, channels=3, seed=1)
  assert again.test.class_names == data.test.class_names
  assert other.test.class_names != data.test.class_names


def test_extracted_folder_reads_the_same_as_the_archive(tiny_archive, tmp_path):
  _, _, data = tiny_archive
  _official_layout(str(tmp_path), archive=False)
  extracted = flowers.load_flowers(str(tmp_path), image_size=16, channels=3, test_fraction=0.2, seed=0)
  assert extracted.train.class_names == data.train.class_names
  np.testing.assert_array_equal(extracted.train.labels, data.train.labels)
  np.testing.assert_allclose(extracted.test.images, data.test.images)


def test_dataset_name_dispatches_to_the_local_reader(tiny_archive):
  folder, _, data = tiny_archive
  loaded = datasets.load(config_lib.DataConfig(dataset="oxford_flowers102", data_dir=folder, image_size=16,
                                               channels=3))
  assert loaded.test.class_names == data.test.class_names


def test_missing_labels_and_images_are_errors(tmp_path):
  _official_layout(str(tmp_path / "nolabels"), labels_file=False)
  with pytest.raises(FileNotFoundError, match="has no imagelabels.mat"):
    flowers.load_flowers(str(tmp_path / "nolabels"))
  os.makedirs(tmp_path / "noimages")
  scipy.io.savemat(str(tmp_path / "noimages" / "imagelabels.mat"), {"labels": np.array([[1, 2]], np.uint8)})
  with pytest.raises(FileNotFoundError, match="neither 102flowers.tgz nor an extracted jpg/"):
    flowers.load_flowers(str(tmp_path / "noimages"))


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")


def test_train_script_missing_imagelabels_is_one_line_error_exit_2(tmp_path):
  data_dir = tmp_path / "flowers"
  _official_layout(str(data_dir), labels_file=False)
  out = tmp_path / "run"
  result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"),
                           "--dataset=oxford_flowers102", f"--data_dir={data_dir}", f"--output_dir={out}",
                           "--noprogress"], capture_output=True, text=True, timeout=120, env=_env())
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "has no imagelabels.mat" in last, last
  assert not out.exists()


def test_train_script_picks_the_datasets_preset():
  """No --preset: flowers_cpu for oxford_flowers102, cpu otherwise; --preset still wins."""
  code = f"""
import importlib.util, json, sys
sys.path.insert(0, {ROOT!r})
spec = importlib.util.spec_from_file_location("train_script", {os.path.join(ROOT, "scripts", "train.py")!r})
train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)
out = {{}}
for name, argv in [("flowers", ["--dataset=oxford_flowers102"]), ("glyphs", []),
                   ("flowers_smoke", ["--dataset=oxford_flowers102", "--preset=smoke"])]:
  train.FLAGS.unparse_flags(); train.FLAGS(["train.py", "--output_dir=/nonexistent"] + argv)
  out[name] = train.build_config().to_dict()
print(json.dumps(out))
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
  assert result.returncode == 0, result.stderr[-2000:]
  got = json.loads(result.stdout.strip().splitlines()[-1])
  flowers_cpu = config_lib.flowers_cpu().to_dict()
  assert got["flowers"]["ali"] == flowers_cpu["ali"] and got["flowers"]["fden"] == flowers_cpu["fden"]
  assert got["flowers"]["ali"]["architecture"] == "celeba"
  assert (got["flowers"]["data"]["image_size"], got["flowers"]["data"]["channels"]) == (64, 3)
  assert got["glyphs"]["fden"] == config_lib.cpu().to_dict()["fden"]
  assert got["flowers_smoke"]["fden"] == config_lib.smoke().to_dict()["fden"]


def test_flowers_presets_are_celeba_with_reconstruction():
  for name in ("flowers_cpu", "flowers_paper"):
    c = config_lib.get(name)
    assert c.data.dataset == "oxford_flowers102" and c.ali.architecture == "celeba"
    assert c.ali.reconstruction_weight > 0  # Appendix B.2's l2 term, as the paper used for flowers
  assert config_lib.get("flowers_paper").fden.hidden_scale == 1.0


def test_package_pins_importlib_resources():
  """TFDS imports importlib_resources but does not declare it on Python >= 3.9 (issue 16)."""
  requires = importlib.metadata.requires("fden_tf") or []
  assert any(r.replace("-", "_").startswith("importlib_resources==") for r in requires), requires


def test_tfds_registered_builder_reaches_its_checksums_offline():
  """The path every tfds.load / download_and_prepare of a registered dataset takes before any download:
  the builder's code_path and url_infos (checksums.tsv). Without importlib_resources this raised
  ModuleNotFoundError."""
  import tensorflow_datasets as tfds
  with tempfile.TemporaryDirectory() as tmp:
    builder = tfds.builder("oxford_flowers102", data_dir=tmp)
    assert str(type(builder).code_path).endswith("oxford_flowers102_dataset_builder.py")
    assert any(url.endswith("102flowers.tgz") for url in builder.url_infos)
    assert builder.info.features["label"].num_classes == 102


def test_pixels_baseline_in_fewshot_metrics():
  """Classes that differ only in their pixels: nearest prototype on raw pixels is exact, on noise it is not."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(6), 4).astype(np.int32)
  images = np.repeat(rng.uniform(size=(6, 1, 4, 4, 3)), 4, axis=1).reshape(24, 4, 4, 3).astype(np.float32)
  noise = rng.standard_normal((24, 8)).astype(np.float32)
  config = config_lib.smoke().replace(fden={"eval_episodes": 100})
  sampler = episodes.EpisodeSampler(labels, 5, 1, 1, "test")
  m = pipeline.fewshot_metrics(noise, noise, noise, sampler, config, pixels=images)
  assert m["fewshot_baselines"]["pixels"]["accuracy"] == 1.0
  assert m["fewshot"]["accuracy"] < 0.6
  assert "pixels" not in pipeline.fewshot_metrics(noise, noise, noise, sampler, config)["fewshot_baselines"]
