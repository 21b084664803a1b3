"""Survive: resume after SIGKILL, the divergence guard, determinism, and bad input rejected cleanly."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import train_fden
from fden_tf import training_loop

pytestmark = pytest.mark.reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--preset=smoke", "--ali_steps=60", "--fden_steps=90", "--checkpoint_every=20", "--eval_episodes=100",
         "--noprogress", "--noexport"]


def _command(out, *flags):
  return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *SMALL, f"--output_dir={out}", *flags]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")


def _run(out, *flags, timeout=300):
  return subprocess.run(_command(out, *flags), capture_output=True, text=True, timeout=timeout, env=_env())


def _metrics(out):
  with open(os.path.join(out, "metrics.json")) as f:
    return json.load(f)


def _comparable(metrics):
  """What an interrupted-and-resumed run must reproduce: accuracies and the last logged training losses."""
  keep = {k: v for k, v in metrics["fden_train"].items() if k not in ("seconds", "resumed", "steps_per_second")}
  return metrics["fewshot"], metrics["fewshot_baselines"], keep, metrics["ali"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  out = tmp_path_factory.mktemp("reliability") / "uninterrupted"
  result = _run(out)
  assert result.returncode == 0, result.stderr[-3000:]
  return out


def _kill_at(out, marker):
  """Starts the run of `out` and SIGKILLs it as soon as `marker` (a checkpoint file) exists."""
  proc = subprocess.Popen(_command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
  try:
    deadline = time.time() + 240
    while not marker.exists():
      assert proc.poll() is None, f"the run ended before {marker.name} appeared"
      assert time.time() < deadline, f"no {marker} within 240 s"
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-stage: at least one checkpoint written, more steps to go
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_sigkill_in_each_stage_then_rerun_matches_an_uninterrupted_run(uninterrupted, tmp_path):
  """Killed mid-ALI; the rerun resumes ALI, finishes it and is killed mid-FDEN; the last rerun resumes FDEN.
  Equal metrics also show that the same seed gives the same run in another process: the first process
  recomputes ALI's first steps from scratch."""
  out = tmp_path / "killed"
  for stage in ("ali", "fden"):
    _kill_at(out, out / stage / "checkpoints" / "ckpt-20.index")
    assert not (out / "metrics.json").exists()
  result = _run(out)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _comparable(_metrics(out)) == _comparable(_metrics(uninterrupted))
  for stage in ("ali", "fden"):
    log = [json.loads(line) for line in (out / stage / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "event" not in r]
    assert steps == sorted(set(steps)), f"the resumed {stage} log reads as one run"


def _tiny_fden_training(tmp_path, nonfinite_steps, max_nonfinite=3, steps=40):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(12), 6)
  latents = (rng.standard_normal((12, 8))[labels] + 0.3 * rng.standard_normal((72, 8))).astype(np.float32)
  c = dataclasses.replace(config_lib.smoke().fden, steps=steps, checkpoint_every=5, episodes_per_batch=4)
  model = fden_lib.FDEN(8, hidden_scale=0.1, init_stddev=0.05, dropout=0.0)
  metrics = train_fden.train(model, c, latents, labels, str(tmp_path), show_progress=False, log_every=5,
                             guard=training_loop.Guard(max_nonfinite, 0.5), nonfinite_steps=nonfinite_steps)
  return model, metrics, tmp_path / "train_log.jsonl"


def test_nonfinite_steps_are_skipped_and_never_reach_the_weights(tmp_path):
  model, metrics, _ = _tiny_fden_training(tmp_path, nonfinite_steps=[3, 9, 10])
  assert metrics["skipped_steps"] == 3 and metrics["recoveries"] == 0
  assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_training_episodes_have_the_training_composition(tmp_path, monkeypatch):
  drawn = []
  sampler = train_fden.episodes_lib.EpisodeSampler

  def recording_sampler(labels, way, shot, query, *args):
    drawn.append((way, shot, query))
    return sampler(labels, way, shot, query, *args)

  monkeypatch.setattr(train_fden.episodes_lib, "EpisodeSampler", recording_sampler)
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(12), 6)
  latents = rng.standard_normal((72, 8)).astype(np.float32)
  c = dataclasses.replace(config_lib.smoke().fden, way=2, shot=1, query=1, train_way=6, train_query=2,
                          steps=3, episodes_per_batch=2)
  model = fden_lib.FDEN(8, hidden_scale=0.1, init_stddev=0.05, dropout=0.0)
  metrics = train_fden.train(model, c, latents, labels, str(tmp_path), show_progress=False, log_every=1)
  assert drawn == [(6, 1, 2)] and metrics["step"] == 3


def test_consecutive_nonfinite_steps_restore_the_last_checkpoint_at_a_lower_learning_rate(tmp_path):
  model, metrics, log = _tiny_fden_training(tmp_path, nonfinite_steps=[12, 13, 14])
  assert metrics["recoveries"] == 1 and metrics["skipped_steps"] == 3 and metrics["step"] == 40
  events = [json.loads(line) for line in log.read_text().splitlines() if "event" in line]
  restored = [e for e in events if e["event"] == "restored_after_divergence"]
  assert restored and restored[0]["step"] == 10 and restored[0]["bad_steps"] == [13, 15]
  assert {"l_m", "loss"} <= set(restored[0]["terms"])
  assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_a_second_divergence_stops_with_the_step_range_and_the_term(tmp_path):
  with pytest.raises(training_loop.DivergenceError, match=r"l_m.* non-finite at steps 23-25"):
    _tiny_fden_training(tmp_path, nonfinite_steps=[12, 13, 14, 22, 23, 24])


def _fake_ali_dir(path, image_shape=(32, 32, 1), checkpoint=False):
  path.mkdir(parents=True)
  (path / "config.json").write_text(config_lib.smoke().to_json())
  (path / "ali").mkdir()
  (path / "ali" / "network.json").write_text(json.dumps({"image_shape": list(image_shape)}))
  return path


def _bad_inputs(tmp_path, uninterrupted):
  empty = tmp_path / "empty"
  empty.mkdir()
  only_train = tmp_path / "only_train" / "train" / "a"
  only_train.mkdir(parents=True)
  not_a_dir = tmp_path / "a_file"
  not_a_dir.write_text("x")
  corrupted = tmp_path / "corrupted"
  shutil.copytree(uninterrupted, corrupted)
  # Every checkpoint damaged: with an intact older one the run would resume from it (tests/test_run_state.py).
  for data in (corrupted / "ali" / "checkpoints").glob("ckpt-*.data*"):
    data.write_bytes(b"\0" * 64)
  return {
      "unknown dataset": (["--dataset=nope"], "unknown dataset 'nope'"),
      "missing data dir": (["--dataset=folder", f"--data_dir={tmp_path / 'nowhere'}"], "does not exist"),
      "empty data dir": (["--dataset=folder", f"--data_dir={empty}"], "holds no class folders"),
      "data dir lacks a split": (["--dataset=folder", f"--data_dir={tmp_path / 'only_train'}"],
                                 "no test/ split"),
      "omniglot split lists missing": (["--dataset=omniglot", f"--data_dir={empty}", f"--splits_dir={empty}"],
                                       "has no trainval.txt"),
      "omniglot without archives": (["--dataset=omniglot", "--split=lake", f"--data_dir={empty}"],
                                    "holds neither images_background.zip"),
      "rotations outside lake": (["--dataset=omniglot", "--train_rotations"], "applies to --dataset=omniglot "
                                 "--split=lake"),
      "way above test classes": (["--way=500"], "larger than the 20 classes"),
      "shot + query above samples": (["--shot=8", "--query=5"], "exceeds the 10 samples"),
      "training way above train classes": (["--train_way=5000"], "--train_way=5000 is larger than the 200 "
                                           "classes of the training split"),
      "ali_dir image size": (["--stage=fden", f"--ali_dir={_fake_ali_dir(tmp_path / 'a64', (64, 64, 1))}"],
                             "ALI for 64x64x1 images but the dataset has 32x32x1"),
      "ali_dir channels": (["--stage=fden", f"--ali_dir={_fake_ali_dir(tmp_path / 'a3', (32, 32, 3))}"],
                           "ALI for 32x32x3 images"),
      "ali_dir latent size": (["--stage=fden", f"--ali_dir={uninterrupted}", "--latent_dim=7"],
                              "drop it when plugging --ali_dir"),
      "ali_dir without checkpoint": (["--stage=fden", f"--ali_dir={_fake_ali_dir(tmp_path / 'a0')}"],
                                     "holds no ALI checkpoint"),
      "ali_dir corrupted checkpoint": (["--stage=fden", f"--ali_dir={corrupted}"], "can be restored"),
      "output dir not writable": ([f"--output_dir={not_a_dir}/run"], "is not writable"),
      "non-positive ALI steps": (["--ali_steps=0"], "--ali_steps must be positive"),
      "non-positive FDEN steps": (["--fden_steps=-3"], "--fden_steps must be positive"),
      "non-positive batch size": (["--batch_size=0"], "--batch_size must be positive"),
      "non-positive episodes per batch": (["--episodes_per_batch=0"], "--episodes_per_batch must be positive"),
  }


BAD_INPUT_CASES = ["unknown dataset", "missing data dir", "empty data dir", "data dir lacks a split",
                   "omniglot split lists missing", "omniglot without archives", "rotations outside lake",
                   "way above test classes", "shot + query above samples",
                   "training way above train classes", "ali_dir image size",
                   "ali_dir channels", "ali_dir latent size", "ali_dir without checkpoint",
                   "ali_dir corrupted checkpoint", "output dir not writable", "non-positive ALI steps",
                   "non-positive FDEN steps", "non-positive batch size", "non-positive episodes per batch"]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_is_one_line_error_exit_2_and_nothing_written(uninterrupted, tmp_path, case):
  flags, message = _bad_inputs(tmp_path, uninterrupted)[case]
  out = tmp_path / "run"
  result = _run(out, *flags)  # a case's own --output_dir comes later and wins
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, last
  assert not out.exists(), "nothing may be written for bad input"


def test_a_finished_run_of_another_configuration_is_refused_unless_overwrite(uninterrupted, tmp_path):
  out = tmp_path / "finished"
  shutil.copytree(uninterrupted, out)
  before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
  result = _run(out, "--way=3")
  assert result.returncode == 2 and "different configuration" in result.stderr and "--overwrite" in result.stderr
  assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_overwrite_trains_both_stages_afresh_and_moves_the_old_run_aside_whole(uninterrupted, tmp_path):
  out = tmp_path / "finished"
  shutil.copytree(uninterrupted, out)
  before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
  result = _run(out, "--seed=1", "--overwrite")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = _metrics(out)
  assert not metrics["ali_train"].get("resumed") and not metrics["fden_train"].get("resumed")
  assert json.loads((out / "config.json").read_text())["seed"] == 1
  assert metrics["fewshot"] != _metrics(uninterrupted)["fewshot"]  # seed 1's glyphs and models, not seed 0's
  aside, = [p for p in tmp_path.iterdir() if p.name.startswith("finished.old-")]
  assert before == {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*")
                    if p.is_file() and p.name != ".lock"}


def test_ali_batches_are_a_function_of_the_step_in_any_order():
  """ALI's batch at step s is epoch s // E's permutation of the images, sliced (E steps an epoch), whether
  the steps come in order, jump back an epoch (a restore) or repeat; the per-epoch cache changes no index."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from fden_tf import train_ali  # pylint: disable=g-import-not-at-top
  num_images, batch_size, seed = 23, 5, 3  # 4 steps an epoch, 3 images left out of each
  batch_of = tf.function(train_ali.batch_indices_fn(num_images, batch_size, seed))

  def expected(step):
    epoch, within = divmod(step, 4)
    keys = tf.random.stateless_uniform([num_images], tf.constant([seed + 7919, epoch], tf.int64))
    return np.argsort(keys.numpy(), kind="stable")[within * batch_size:(within + 1) * batch_size]

  for step in [0, 1, 2, 3, 4, 5, 9, 2, 2, 13, 0, 7]:
    np.testing.assert_array_equal(batch_of(tf.constant(step, tf.int64)), expected(step), err_msg=f"step {step}")
  epoch = np.concatenate([batch_of(tf.constant(s, tf.int64)).numpy() for s in range(4, 8)])
  assert len(set(epoch)) == 20 and epoch.min() >= 0 and epoch.max() < num_images


def test_a_test_split_of_fewer_than_8_classes_gets_its_translation_pairs_and_one_class_is_refused(tmp_path):
  """Issue 17 item 9: 4 translation pairs used to need 8 test classes ("Cannot take a larger sample than
  population" after ALI trained); now any split of >= 2 classes works and fewer is refused up front."""
  from fden_tf import pipeline
  from fden_tf import preflight
  from fden_tf.data import split as split_lib
  labels = np.repeat(np.arange(3), 4).astype(np.int32)
  images = np.broadcast_to(labels[:, None, None, None].astype(np.float32), (12, 32, 32, 1)).copy()
  test = split_lib.Split(images, labels, ["a", "b", "c"])
  images_a, images_b = pipeline._translation_pairs(test, pairs=4, seed=0)  # pylint: disable=protected-access
  assert images_a.shape == images_b.shape == (4, 32, 32, 1)
  assert np.all(images_a[:, 0, 0, 0] != images_b[:, 0, 0, 0])  # each pair swaps between two classes
  eight = split_lib.Split(np.repeat(images, 3, axis=0)[:32], np.repeat(np.arange(8), 4).astype(np.int32),
                          [str(i) for i in range(8)])
  a, b = pipeline._translation_pairs(eight, pairs=4, seed=0)  # pylint: disable=protected-access
  assert a.shape == (4, 32, 32, 1)  # the 2 * pairs distinct classes path, as before
  one_class = split_lib.FewShotData("tiny", test, split_lib.Split(images[:4], np.zeros(4, np.int32), ["a"]))
  config = config_lib.smoke().replace(fden={"way": 1, "shot": 1, "query": 1, "train_way": 2})
  with pytest.raises(ValueError, match="test split has 1 class; translating identities needs at least 2"):
    preflight.check(config, str(tmp_path / "run"), data=one_class)
  assert not (tmp_path / "run").exists()


def test_an_unknown_standardization_is_refused_before_anything_trains(tmp_path):
  """A hand-built config's typo used to surface only when FDEN was built, after ALI had trained."""
  from fden_tf import preflight
  config = config_lib.smoke().replace(fden={"standardize_latents": True, "standardization": "pca"})
  with pytest.raises(ValueError, match=r"unknown standardization 'pca'; choose one of \('per_dimension', "
                                       r"'global'\)"):
    preflight.check(config, str(tmp_path / "run"))
  with pytest.raises(ValueError, match="cache_jitters must be >= 0, got -2"):
    preflight.check(config_lib.smoke().replace(fden={"cache_jitters": -2}), str(tmp_path / "run"))
  with pytest.raises(ValueError, match=r"style_dim must be >= 1 \(or None: Dim\), got 0"):
    preflight.check(config_lib.smoke().replace(fden={"style_dim": 0}), str(tmp_path / "run"))
  with pytest.raises(ValueError, match=r"unknown learning_rate_schedule 'step'; choose one of \('constant', "
                                       r"'cosine'\)"):
    preflight.check(config_lib.smoke().replace(fden={"learning_rate_schedule": "step"}), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
