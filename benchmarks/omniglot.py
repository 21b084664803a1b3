"""Table 1 on real Omniglot, beside the paper's numbers: one command.

    python benchmarks/omniglot.py --data_dir=../shared/data/omniglot \
        --splits_dir=../shared/data/omniglot/splits/vinyals          # CPU preset, under 2 h on 2 cores
    python benchmarks/omniglot.py --preset=paper --data_dir=...      # the paper's scale, for a GPU

Trains ALI once on the 4,800 training classes of the Vinyals split (rotations as classes), then FDEN for each
setting (5-way 1-shot, 5-way 5-shot, 20-way 1-shot) and evaluates each on 1,000 episodes of the 1,692 unseen
test classes: nearest prototype on f_ide (FDEN), and on the same episodes on the raw latent z (does the
alignment help?) and on f_sty (identity leaking into style: lower is better). Each setting's FDEN trains on
the preset's training episodes (`train_way`, `train_shot`, `train_query`; where the preset leaves them
unset, the setting's own shape with `QUERIES` queries). Settings whose training would be identical share
one FDEN: it is trained in the first one's run directory and evaluated on the others' tasks. Every run is an
ordinary output directory of the pipeline (resumable: re-running the command continues where it stopped);
the benchmark writes <output_dir>/results.json and results.md (the table) and
prints the table.
"""

import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", "cpu", ["cpu", "paper"], "cpu: omniglot_cpu (2-core CPU, under two hours); "
                  "paper: omniglot_paper (GPU).")
flags.DEFINE_string("data_dir", None, "Folder holding images_background.zip and images_evaluation.zip "
                    "(default: TFDS).")
flags.DEFINE_string("splits_dir", None, "Folder holding the Vinyals lists trainval.txt and test.txt "
                    "(default: downloaded once and cached).")
flags.DEFINE_string("output_dir", None, "Where the runs and results go (default runs/omniglot_<preset>).")
flags.DEFINE_list("settings", ["5w1s", "5w5s", "20w1s"], "Few-shot settings, <way>w<shot>s.")
flags.DEFINE_integer("ali_steps", None, "Override the preset's ALI steps (for quick trials).")
flags.DEFINE_integer("fden_steps", None, "Override the preset's FDEN steps (for quick trials).")
flags.DEFINE_integer("eval_episodes", None, "Override the 1,000 test episodes (for quick trials).")
flags.DEFINE_integer("cache_jitters", None, "Override the preset's jittered copies of each training image in "
                     "FDEN's latent cache (FDENConfig.cache_jitters).")
flags.DEFINE_integer("style_dim", None, "Override the preset's size of f_sty (FDENConfig.style_dim; the preset's "
                     "None is Dim, the paper's).")
flags.DEFINE_boolean("progress", True, "Progress lines on a terminal.")

# Table 1 of the paper (Omniglot, accuracy %): FDEN from f_ide, and Prototypical Networks on raw images.
PAPER = {"5w1s": {"fden": 88.3, "protonet": 98.8},
         "5w5s": {"fden": 95.4, "protonet": 99.7},
         "20w1s": {"fden": 82.6, "protonet": 96.0}}


# Queries per class, in training and test episodes, by setting: 5 where an episode is small (more signal a
# step for the same few classes), 1 for 20-way (the paper's; 20 queries an episode already). FDEN steps cost in
# proportion to the rows of a batch, 16 episodes x way x (shot + query): 480 / 800 / 640 here.
QUERIES = {"5w1s": 5, "5w5s": 5, "20w1s": 1}
DEFAULT_QUERIES = 1


def parse_setting(text):
  way, _, shot = text.lower().rstrip("s").partition("w")
  if not (way.isdigit() and shot.isdigit() and int(way) > 0 and int(shot) > 0):
    raise ValueError(f"--settings: {text!r} is not of the form <way>w<shot>s, e.g. 5w1s")
  return {"way": int(way), "shot": int(shot), "query": QUERIES.get(text.lower(), DEFAULT_QUERIES)}


def fden_overrides(steps=None, eval_episodes=None, cache_jitters=None, style_dim=None):
  """The FDENConfig fields the flags change. steps and eval_episodes: None or 0 keep the preset's (quick
  trials only shorten); cache_jitters and style_dim: None keeps the preset's, any other value replaces it
  (0 jitters is a value of its own: none, whatever the preset holds)."""
  overrides = {k: v for k, v in (("steps", steps), ("eval_episodes", eval_episodes)) if v}
  overrides.update({k: v for k, v in (("cache_jitters", cache_jitters), ("style_dim", style_dim))
                    if v is not None})
  return overrides


def markdown_table(results):
  pct = lambda r: f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
  rows = ["| setting | FDEN (paper) | ProtoNet (paper) | **f_ide (ours)** | z (no FDEN) | f_sty (lower = better) "
          "| test queries/class | FDEN trained on |",
          "|---|---|---|---|---|---|---|---|"]
  for name, r in results["settings"].items():
    paper = PAPER.get(name, {})
    rows.append(f"| {r['way']}-way {r['shot']}-shot | {paper.get('fden', '–')} | {paper.get('protonet', '–')} | "
                f"**{pct(r['f_ide'])}** | {pct(r['z'])} | {pct(r['f_sty'])} | {r['query']} | "
                f"{_training(r)} |")
  return "\n".join(rows) + "\n"


def main(argv):
  del argv
  from fden_tf import config as config_lib
  from fden_tf import preflight
  try:
    settings = {name: parse_setting(name) for name in FLAGS.settings}
    config = config_lib.get("omniglot_" + FLAGS.preset)
    overrides = {k: v for k, v in (("steps", FLAGS.ali_steps),) if v}
    config = config.replace(data={"data_dir": FLAGS.data_dir, "splits_dir": FLAGS.splits_dir}, ali=overrides,
                            fden=fden_overrides(FLAGS.fden_steps, FLAGS.eval_episodes, FLAGS.cache_jitters,
                                                FLAGS.style_dim))
    preflight.check_fden_options(config.fden)  # before ALI trains: the ALI run's own check sees no FDEN
    # The ALI run records no FDEN settings of its own (it uses none): the FDEN runs below hold them.
    ali_config = config.replace(fden=config_lib.FDENConfig())
    output_dir = FLAGS.output_dir or os.path.join("runs", f"omniglot_{FLAGS.preset}")
    ali_dir = os.path.join(output_dir, "ali_run")
    t = time.time()
    ali_config, data = preflight.check(ali_config, ali_dir, stage="ali")
    load_seconds = time.time() - t
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from fden_tf import files
  from fden_tf import pipeline
  from fden_tf import runs
  start = time.time()
  print(f"omniglot: {data.train.num_classes} train classes ({len(data.train.images)} images), "
        f"{data.test.num_classes} test classes ({len(data.test.images)} images), loaded in {load_seconds:.0f} s")
  ali_metrics = runs.finished_metrics(ali_dir, ali_config) or pipeline.train_and_evaluate(
      ali_config, ali_dir, stage="ali", show_progress=FLAGS.progress, export=False, data=data)
  results = {"preset": "omniglot_" + FLAGS.preset, "config": config.to_dict(), "machine": _machine(),
             "ali": {"reconstruction_mse": ali_metrics["ali"]["reconstruction_mse"],
                     "training_seconds": _training_seconds(ali_metrics["ali_train"]), "dir": ali_dir},
             "settings": {}, "data_seconds": load_seconds}
  trained = {}  # training_key -> the run directory whose FDEN that training made
  for name, episode in settings.items():
    run_dir = os.path.join(output_dir, name)
    run_config = config.replace(fden=episode)
    key = training_key(run_config)
    m = runs.finished_metrics(run_dir, run_config)
    if m is None and key in trained:
      m = evaluate_trained(trained[key], run_dir, run_config, data)
    elif m is None:
      m = pipeline.train_and_evaluate(run_config, run_dir, stage="fden", ali_dir=ali_dir,
                                      show_progress=FLAGS.progress, export=False, data=data)
    trained.setdefault(key, run_dir)
    train_way, train_shot, train_query = run_config.fden.training_episode
    results["settings"][name] = {
        **episode, "episodes": m["fewshot"]["episodes"],
        "f_ide": _acc(m["fewshot"]), "z": _acc(m["fewshot_baselines"]["z"]),
        "f_sty": _acc(m["fewshot_baselines"]["f_sty"]), "paper": PAPER.get(name),
        "training_episodes": {"way": train_way, "shot": train_shot, "query": train_query,
                              "per_step": run_config.fden.episodes_per_batch},
        "fden_steps": run_config.fden.steps, "dir": run_dir, "fden_trained_in": m.get("trained_in", run_dir),
        "seconds": dict(m["seconds"], fden=_training_seconds(m["fden_train"]) if "trained_in" not in m else 0.0)}
    print(f"{name}: f_ide {100 * m['fewshot']['accuracy']:.2f}% "
          f"(z {100 * m['fewshot_baselines']['z']['accuracy']:.2f}%, "
          f"f_sty {100 * m['fewshot_baselines']['f_sty']['accuracy']:.2f}%)", flush=True)
  # Wall time of this invocation, and the sum of every stage's time (equal for an uninterrupted run; for a
  # resumed one, training counts at what its train_log recorded).
  results["wall_seconds_this_invocation"] = time.time() - start + load_seconds
  results["stage_seconds_total"] = load_seconds + results["ali"]["training_seconds"] + sum(
      sum(r["seconds"].values()) for r in results["settings"].values())
  table = markdown_table(results)
  files.write_json(os.path.join(output_dir, "results.json"), results)
  files.atomic_write(os.path.join(output_dir, "results.md"), lambda f: f.write(table))
  first = next(iter(settings))
  for figure in ("tsne.png", "translation.png"):
    shutil.copyfile(os.path.join(output_dir, first, figure), os.path.join(output_dir, f"omniglot_{figure}"))
  print(table)
  print(f"wrote {output_dir}/results.json and results.md; total {results['stage_seconds_total'] / 60:.1f} min")


def training_key(run_config):
  """What FDEN's training depends on: the run's config with its test task replaced by the training episodes'
  composition. Settings with equal keys would train the very same FDEN, so it is trained once."""
  way, shot, query = run_config.fden.training_episode
  return run_config.replace(fden=dict(way=way, shot=shot, query=query, train_way=None, train_shot=None,
                                      train_query=None)).to_json()


def evaluate_trained(source_dir, run_dir, run_config, data):
  """Evaluates the FDEN trained in `source_dir` on `run_config`'s task (the pipeline's evaluation: the same
  episodes, f_ide and the z / f_sty baselines) and records it in `run_dir` (config.json, metrics.json with
  "trained_in"), so a re-run reads it back like any finished run."""
  from fden_tf import files
  from fden_tf import pipeline
  from fden_tf import plugin
  from fden_tf import runs
  from fden_tf import train_fden
  from fden_tf.data import episodes
  t = time.time()
  run = runs.load_run(source_dir)
  z_test = plugin.encode_all(run.plugged, data.test.images)
  f_ide, f_sty, _ = train_fden.factorise(run.fden, z_test)
  f = run_config.fden
  sampler = episodes.EpisodeSampler(data.test.labels, f.way, f.shot, f.query, "the test split")
  with open(os.path.join(source_dir, "metrics.json")) as fh:
    source = json.load(fh)
  metrics = {"stage": "fden", "plugged": source["plugged"], "trained_in": source_dir,
             "fden_train": source["fden_train"],
             **pipeline.fewshot_metrics(f_ide, f_sty, z_test, sampler, run_config)}
  metrics["seconds"] = {"evaluation": time.time() - t}
  os.makedirs(run_dir, exist_ok=True)
  files.write_json(os.path.join(run_dir, "config.json"), run_config.to_dict())
  files.write_json(os.path.join(run_dir, "metrics.json"), metrics)
  return metrics


def _training_seconds(train_metrics):
  """Training time of a stage from its train_log (what `training_loop.run` returns, also when the stage had
  finished in an earlier invocation). A stage resumed after an interruption counts from the resume only."""
  return train_metrics["seconds"]


def _training(r):
  t = r.get("training_episodes")
  if not t:
    return "–"
  shared = "" if r["fden_trained_in"] == r["dir"] else f" (the FDEN of {os.path.basename(r['fden_trained_in'])})"
  return f"{t['way']}-way {t['shot']}-shot, {t['query']} query, {t['per_step']} a step{shared}"


def _acc(result):
  return {"accuracy": result["accuracy"], "ci95": result["ci95"]}


def _machine():
  import platform
  return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "python": platform.python_version()}


if __name__ == "__main__":
  app.run(main)
