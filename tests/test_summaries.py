"""What a run writes for TensorBoard and for people who would rather look at PNGs, read back with
TensorBoard's own readers."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins import projector as projector_plugin

from fden_tf import config as config_lib
from fden_tf import pipeline
from fden_tf import projector


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("summaries") / "run"
  config = config_lib.smoke().replace(ali={"steps": 40, "checkpoint_every": 20},
                                      fden={"steps": 60, "checkpoint_every": 30, "eval_episodes": 50},
                                      log_every=20)
  pipeline.train_and_evaluate(config, str(out), show_progress=False, export=False)
  return out


def _events(run_dir):
  acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def test_event_files_hold_the_named_scalars_and_images(run_dir):
  acc = _events(run_dir)
  tags = set(acc.Tags()["tensors"])
  for name in ["l_r", "l_c", "l_m", "accuracy", "grad_norm_u", "grad_norm_m", "clip_fraction",
               "learning_rate", "steps_per_second", "skipped_steps"]:
    assert f"fden/{name}" in tags, name
  for name in ["d_loss", "g_loss", "d_real", "d_fake", "reconstruction", "learning_rate"]:
    assert f"ali/{name}" in tags, name
  assert [e.step for e in acc.Tensors("fden/l_m")] == [20, 40, 60]
  assert all(np.isfinite(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("fden/l_m"))
  for tag in ["ali/samples", "ali/reconstructions", "fden/translation"]:
    assert tag in tags, tag
    events = acc.Tensors(tag)
    assert [e.step for e in events] == ([20, 40] if tag.startswith("ali") else [30, 60])
    # An image summary is [width, height, PNG...]: decode the first image and check its size.
    encoded = tf.make_ndarray(events[-1].tensor_proto)
    image = tf.io.decode_png(encoded[2]).numpy()
    assert image.shape[:2] == (int(encoded[1]), int(encoded[0]))


def test_hparams_summary_is_present_with_the_final_accuracy(run_dir):
  acc = _events(run_dir)
  plugins = {tag: acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in acc.Tags()["tensors"]}
  assert "hparams" in plugins.values()
  assert "hparams/fewshot_accuracy" in plugins


def test_projector_config_names_tensors_of_its_checkpoint_with_metadata_and_sprite(run_dir):
  logdir = run_dir / "tensorboard"
  config = text_format.Parse((logdir / "projector_config.pbtxt").read_text(), projector_plugin.ProjectorConfig())
  reader = tf.train.load_checkpoint(str(logdir))
  shapes = reader.get_variable_to_shape_map()
  names = [e.tensor_name for e in config.embeddings]
  assert names == ["z/.ATTRIBUTES/VARIABLE_VALUE", "f_ide/.ATTRIBUTES/VARIABLE_VALUE",
                   "f_sty/.ATTRIBUTES/VARIABLE_VALUE"]
  points = shapes[names[0]][0]
  assert points == min(pipeline.PROJECTOR_POINTS, 200)  # smoke: 20 test classes x 10 samples
  latent = config_lib.smoke().ali.latent_dim
  assert all(shapes[n] == [points, latent] for n in names)
  for e in config.embeddings:
    assert not os.path.isabs(e.metadata_path) and not os.path.isabs(e.sprite.image_path)
  rows = (logdir / "metadata.tsv").read_text().splitlines()
  assert rows[0].split("\t")[:2] == ["class", "label"] and "rotation" in rows[0]
  assert len(rows) == points + 1
  sprite = Image.open(logdir / "sprite.png")
  side = int(np.ceil(np.sqrt(points)))
  assert sprite.size == (side * 32, side * 32)
  assert list(config.embeddings[0].sprite.single_image_dim) == [32, 32]


@pytest.mark.parametrize("name,size", [("tsne.png", (900, 430)), ("curves.png", (1200, 640))])
def test_static_figures_are_real_images(run_dir, name, size):
  image = Image.open(run_dir / name)
  assert image.format == "PNG" and image.size == size
  assert np.asarray(image.convert("L")).std() > 5


def test_ali_figure_shows_held_out_images_their_reconstructions_and_prior_samples(run_dir, tmp_path):
  assert Image.open(run_dir / "samples.png").format == "PNG"
  from fden_tf import visualize
  # Known answer: white images, black reconstructions, mid-grey samples; a panel each, top to bottom.
  white, black, grey = (np.full((4, 8, 8, 1), v, np.float32) for v in (1.0, 0.0, 0.5))
  visualize.save_samples_figure(tmp_path / "three.png", grey, white, black)
  visualize.save_samples_figure(tmp_path / "two.png", grey, white)
  three = np.asarray(Image.open(tmp_path / "three.png").convert("L"), np.float32)
  two = Image.open(tmp_path / "two.png")
  assert three.shape[0] > two.size[1]  # one more panel
  dark_rows = np.flatnonzero((three < 30).mean(axis=1) > 0.1)  # the black reconstructions' rows
  grey_rows = np.flatnonzero((np.abs(three - 128) < 20).mean(axis=1) > 0.1)
  assert dark_rows.size and grey_rows.size and dark_rows.max() < grey_rows.max()


def test_sprite_and_metadata_rules():
  images = np.zeros((5, 4, 4, 1), np.float32)
  assert projector.sprite(images).shape == (12, 12, 3)
  with pytest.raises(ValueError, match="8192px"):
    projector.sprite(np.zeros((3000, 200, 200, 1), np.float32))


def test_project_script_writes_the_projector_for_a_finished_run(run_dir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  shutil.rmtree(copy / "tensorboard")
  script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "project.py")
  result = subprocess.run([sys.executable, script, f"--run_dir={copy}", "--points=30"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert len((copy / "tensorboard" / "metadata.tsv").read_text().splitlines()) == 31
  assert (copy / "tensorboard" / "projector_config.pbtxt").exists()
  missing = subprocess.run([sys.executable, script, f"--run_dir={tmp_path / 'nope'}"], capture_output=True,
                           text=True, timeout=300)
  assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: ")


def test_path_like_class_names_give_projector_columns():
  names = ["Greek/character01/rot000", "Latin/character12/rot270"]
  assert pipeline.class_name_parts(names) == {"alphabet": ["Greek", "Latin"],
                                              "character": ["character01", "character12"],
                                              "rotation": ["rot000", "rot270"]}
  assert pipeline.class_name_parts(["Greek/character01"]) == {"alphabet": ["Greek"],
                                                               "character": ["character01"]}
  assert pipeline.class_name_parts(["glyph0001", "glyph0002"]) == {}
  assert pipeline.class_name_parts(["a/b", "a/b/c"]) == {}  # mixed depths: not a naming scheme
