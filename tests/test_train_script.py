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
