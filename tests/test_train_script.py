"""End to end through the command line, as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(*flags, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), *flags],
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_train_script_end_to_end_on_glyphs(tmp_path):
  out = tmp_path / "run"
  result = run_train("--preset=smoke", f"--output_dir={out}", "--way=5", "--shot=1", "--noprogress")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((out / "metrics.json").read_text())
  fewshot = metrics["fewshot"]
  assert {"way", "shot", "episodes", "accuracy", "ci95"} <= set(fewshot)
  assert (fewshot["way"], fewshot["shot"]) == (5, 1)
  assert fewshot["accuracy"] >= 2 * 0.2, metrics  # at least twice chance
  assert 0 < fewshot["ci95"] < 0.1
  assert "5-way 1-shot accuracy from f_ide" in result.stdout
  image = np.asarray(Image.open(out / "translation.png"))
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 10
  assert json.loads((out / "config.json").read_text())["fden"]["way"] == 5
  assert (out / "ali" / "checkpoints" / "checkpoint").exists()
  assert (out / "fden" / "checkpoints" / "checkpoint").exists()
  for name in ("tsne.png", "curves.png", "disentanglement.json"):
    assert (out / name).exists(), name
  # Training ends by exporting a SavedModel, in TF Serving's layout.
  assert (out / "saved_models" / "run" / "1" / "saved_model.pb").exists()

  # The same command again (this time from a --flagfile) resumes: both stages are finished, nothing is
  # retrained, and the same episodes give the same accuracy.
  flagfile = tmp_path / "run.flags"
  flagfile.write_text(f"--preset=smoke\n--output_dir={out}\n--way=5\n--shot=1\n--noprogress\n")
  again = run_train(f"--flagfile={flagfile}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((out / "metrics.json").read_text())["fewshot"] == fewshot
  assert sorted(p.name for p in (out / "saved_models" / "run").iterdir()) == ["1"], "no re-export on resume"

  # FDEN plugged into the ALI of that run, through --ali_dir, for another episode shape.
  plugged = tmp_path / "plugged"
  result = run_train("--preset=smoke", "--stage=fden", f"--ali_dir={out}", f"--output_dir={plugged}",
                     "--way=3", "--shot=2", "--fden_steps=20", "--noprogress", "--noexport")
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((plugged / "metrics.json").read_text())["fewshot"]["way"] == 3
  assert not (plugged / "ali").exists()


def test_output_dir_of_a_different_configuration_is_refused(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "config.json").write_text(json.dumps({"something": "else"}))
  result = run_train("--preset=smoke", f"--output_dir={out}", "--noprogress")
  assert result.returncode == 2 and "different configuration" in result.stderr
  assert json.loads((out / "config.json").read_text()) == {"something": "else"}


SCRIPTS = ("train.py", "evaluate.py", "export.py", "project.py")


def run_script(script, *flags, env=None, timeout=120):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *flags], capture_output=True,
                        text=True, timeout=timeout, env=dict(os.environ, **(env or {})), cwd=ROOT)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_and_refuses_bad_flags_and_stray_arguments_with_exit_2(script):
  """fden_tf/cli.py: --help exits 0; an unknown flag, a bad value or a positional argument (a forgotten
  `--`) is one error line and exit 2, before TensorFlow is imported (these take about a second)."""
  result = run_script(script, "--help")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "--output_dir" in result.stdout if script == "train.py" else "--run_dir" in result.stdout
  for flags, expected in [(["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
                          (["--run_dir"] if script != "train.py" else ["--seed=x"], "flag --"),
                          (["preset=smoke"], "unexpected argument(s) preset=smoke")]:
    result = run_script(script, *flags)
    assert result.returncode == 2, (flags, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (flags, lines)
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("flag, expected", [
    ("--image_size=256", "--image_size=256 fits no ALI architecture; choose one of [32, 64]"),
    ("--channels=2", "--channels must be 1 (grayscale) or 3 (RGB), got 2"),
    ("--seed=-1", "--seed must be a non-negative integer, got -1"),
])
def test_flag_values_later_stages_refuse_are_refused_before_any_data_is_loaded(tmp_path, flag, expected):
  # oxford_flowers102 would load 2 GB from TFDS first; refused before, nothing downloaded or written.
  result = run_script("train.py", "--dataset=oxford_flowers102", f"--data_dir={tmp_path / 'tfds'}", flag,
                      f"--output_dir={tmp_path / 'run'}")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
  assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()


def test_tensorflow_is_quiet_by_default(monkeypatch):
  """No oneDNN banner, "Could not find cuda drivers" or cuInit error on a CPU-only machine unless asked."""
  code = ("import sys; from fden_tf import cli; cli.quiet_tensorflow(int(sys.argv[1])); cli.import_tensorflow(); "
          "import tensorflow as tf; print(float(tf.reduce_sum(tf.ones([3]))))")
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  quiet = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True, timeout=300,
                         env=env, cwd=ROOT)
  assert quiet.returncode == 0 and quiet.stdout.strip() == "3.0", quiet.stderr[-2000:]
  assert quiet.stderr.strip() == "", quiet.stderr[-2000:]
  # --verbosity=1 (absl's debug level) or the user's own TF_CPP_MIN_LOG_LEVEL: TensorFlow's log is left on.
  from fden_tf import cli
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
  cli.quiet_tensorflow(1)
  assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
  cli.quiet_tensorflow(0)
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
  monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
  cli.quiet_tensorflow(0)
  assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == cli.QUIET_TF_LOG_LEVEL


def test_tensorflows_own_info_lines_are_dropped_and_the_scripts_kept(tmp_path):
  """Under cli.run, TensorFlow's INFO lines logged through absl (a checkpoint's "Sharding callback
  duration", a SavedModel's signature input names) do not print; a script's own absl INFO lines do, and
  --verbosity=1 brings TensorFlow's back."""
  script = tmp_path / "script.py"
  script.write_text(
      "from absl import logging\nfrom fden_tf import cli\n\ndef main(_):\n  cli.import_tensorflow()\n"
      "  import tensorflow as tf\n  logging.info('own line')\n"
      f"  tf.train.Checkpoint(v=tf.Variable(1.0)).save({str(tmp_path / 'ckpt' / 'c')!r})\n\n"
      "if __name__ == '__main__':\n  cli.run(main)\n")
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  run = lambda *flags: subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True,
                                      timeout=300, env=env, cwd=ROOT)
  quiet, verbose = run(), run("--verbosity=1")
  assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr[-2000:] + verbose.stderr[-2000:]
  assert "own line" in quiet.stderr and "Sharding callback" not in quiet.stderr, quiet.stderr[-2000:]
  assert "Sharding callback" in verbose.stderr, verbose.stderr[-2000:]


def _built_config(flags, fields):
  """The values of `fields` (expressions of the Config `c`) that scripts/train.py's build_config makes of
  `flags`, in a fresh interpreter (absl parses flags once per process)."""
  code = f"""
import importlib.util, json, sys
sys.path.insert(0, {ROOT!r})
spec = importlib.util.spec_from_file_location("train_script", {os.path.join(ROOT, "scripts", "train.py")!r})
train = importlib.util.module_from_spec(spec); spec.loader.exec_module(train)
train.FLAGS(["train.py", *{list(flags)!r}])
c = train.build_config()
print(json.dumps([{", ".join(fields)}]))
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_lever_flags_reach_the_config_and_refuse_bad_values(tmp_path):
  values = _built_config(
      ["--ali_prior_matching_weight=10", "--ali_instance_noise=0.1", "--alpha=2", "--identity_swap_weight=0.5",
       "--style_bottleneck_weight=0.3", "--clean_decoding_weight=0", "--style_dim=4",
       "--standardize_latents=per_dimension", "--ali_discriminator_lr_factor=0.3", "--cache_jitters=3",
       "--fden_learning_rate_schedule=constant", "--ali_mirror", "--ali_instance_noise_final=0.05",
       "--ali_generator_upsampling=resize", "--ali_prior_moment_weight=3", "--neutral_style_weight=0.2",
       "--fden_seed=5"],
      ["c.ali.prior_matching_weight", "c.ali.instance_noise", "c.fden.alpha", "c.fden.identity_swap_weight",
       "c.fden.style_bottleneck_weight", "c.fden.clean_decoding_weight", "c.fden.style_dim",
       "c.fden.standardize_latents", "c.fden.standardization", "c.ali.discriminator_lr_factor",
       "c.fden.cache_jitters", "c.fden.learning_rate_schedule", "c.ali.mirror", "c.ali.instance_noise_final",
       "c.ali.generator_upsampling", "c.ali.prior_moment_weight", "c.fden.neutral_style_weight", "c.fden.seed",
       "c.seed"])
  # Every value differs from the cpu preset's (100, 0.2, 0.4, 0.07, 0.1, 0.07, 8, True, global, 1, 2, cosine,
  # False, None, transposed, 10, 0.3, None): each came from its flag; --fden_seed leaves --seed (0) alone.
  assert values == [10.0, 0.1, 2.0, 0.5, 0.3, 0.0, 4, True, "per_dimension", 0.3, 3, "constant", True, 0.05,
                    "resize", 3.0, 0.2, 5, 0]
  for flag, message in (("--ali_instance_noise=-0.1", "--ali_instance_noise must be >= 0, got -0.1"),
                        ("--ali_instance_noise_final=-0.1", "--ali_instance_noise_final must be >= 0, got -0.1"),
                        ("--clean_decoding_weight=-1", "--clean_decoding_weight must be >= 0, got -1.0"),
                        ("--ali_prior_moment_weight=-1", "--ali_prior_moment_weight must be >= 0, got -1.0"),
                        ("--neutral_style_weight=-1", "--neutral_style_weight must be >= 0, got -1.0"),
                        ("--fden_seed=-1", "--fden_seed must be a non-negative integer, got -1"),
                        ("--cache_jitters=-1", "--cache_jitters must be >= 0, got -1"),
                        ("--style_dim=0", "--style_dim must be positive, got 0"),
                        ("--ali_discriminator_lr_factor=0",
                         "--ali_discriminator_lr_factor must be positive, got 0.0")):
    result = run_script("train.py", flag, f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.strip().endswith(message)
  result = run_script("train.py", "--ali_instance_noise=0", "--ali_instance_noise_final=0.1",
                      f"--output_dir={tmp_path / 'run'}")
  assert result.returncode == 2 and result.stderr.strip().endswith(
      "--ali_instance_noise_final decays the instance noise: it needs --ali_instance_noise > 0")
  assert not (tmp_path / "run").exists()


def test_train_rotations_reaches_the_data_config_with_lakes_protocol():
  fields = ["c.data.split", "c.data.train_rotations"]
  assert _built_config(["--dataset=omniglot", "--split=lake", "--train_rotations"], fields) == ["lake", True]
  assert _built_config(["--dataset=omniglot", "--split=lake"], fields) == ["lake", False]
