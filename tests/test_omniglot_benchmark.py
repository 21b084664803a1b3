"""benchmarks/omniglot.py's bookkeeping: which settings share one FDEN, and the table it prints."""

import importlib.util
import os

import pytest

from fden_tf import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location("omniglot_benchmark",
                                                os.path.join(ROOT, "benchmarks", "omniglot.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_settings_with_the_same_training_episodes_share_one_fden(bench):
  task = lambda config, name: config.replace(fden=bench.parse_setting(name))
  fixed = config_lib.smoke().replace(fden={"train_way": 30, "train_query": 1})  # shot: the task's
  keys = {name: bench.training_key(task(fixed, name)) for name in ("5w1s", "20w1s", "5w5s")}
  assert keys["5w1s"] == keys["20w1s"] != keys["5w5s"]  # 5-shot training episodes differ
  own = config_lib.smoke()  # no training composition: each setting trains on its own episodes
  assert len({bench.training_key(task(own, name)) for name in ("5w1s", "20w1s", "5w5s")}) == 3
  longer = fixed.replace(fden={"steps": 7})
  assert bench.training_key(task(longer, "5w1s")) != keys["5w1s"]


def test_setting_parsing_and_the_table(bench):
  assert bench.parse_setting("20w1s") == {"way": 20, "shot": 1, "query": 1}
  with pytest.raises(ValueError, match="<way>w<shot>s"):
    bench.parse_setting("5-way")
  acc = {"accuracy": 0.9, "ci95": 0.01}
  run = lambda d: {"way": 5, "shot": 1, "query": 5, "f_ide": acc, "z": acc, "f_sty": acc, "dir": d,
                   "fden_trained_in": "runs/x/5w1s",
                   "training_episodes": {"way": 30, "shot": 1, "query": 1, "per_step": 4}}
  table = bench.markdown_table({"settings": {"5w1s": run("runs/x/5w1s"), "other": run("runs/x/other")}})
  lines = table.splitlines()
  assert lines[2] == ("| 5-way 1-shot | 88.3 | 98.8 | **90.00 ± 1.00** | 90.00 ± 1.00 | 90.00 ± 1.00 | 5 | "
                      "30-way 1-shot, 1 query, 4 a step |")
  assert lines[3].endswith("30-way 1-shot, 1 query, 4 a step (the FDEN of 5w1s) |")


def test_flags_override_only_what_they_name(bench):
  assert bench.fden_overrides() == {}
  assert bench.fden_overrides(steps=0, eval_episodes=0) == {}  # 0: the preset's length, as before
  assert bench.fden_overrides(steps=7, cache_jitters=0, style_dim=16) == {
      "steps": 7, "cache_jitters": 0, "style_dim": 16}
  config = config_lib.omniglot_cpu().replace(fden=bench.fden_overrides(style_dim=16))
  assert (config.fden.style_dim, config.fden.cache_jitters) == (16, 2)
