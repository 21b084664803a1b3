"""Table 1 on real Omniglot, beside the paper's numbers: one command.

    python benchmarks/omniglot.py --data_dir=../shared/data/omniglot \
        --splits_dir=../shared/data/omniglot/splits/vinyals          # CPU preset, about 1.5 h on 2 cores
    python benchmarks/omniglot.py --preset=paper --data_dir=...      # the paper's scale, for a GPU

Trains ALI once on the 4,800 training classes of the Vinyals split (rotations as classes), then FDEN once per
setting (5-way 1-shot, 5-way 5-shot, 20-way 1-shot: each trained with its own episode shape) and evaluates
each on 1,000 episodes of the 1,692 unseen test classes: nearest prototype on f_ide (FDEN), and on the same
episodes on the raw latent z (does the alignment help?) and on f_sty (identity leaking into style: lower is
better). Every run is an ordinary output directory of the pipeline (resumable: re-running the command
continues where it stopped); the benchmark writes <output_dir>/results.json and results.md (the table) and
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
flags.DEFINE_boolean("progress", True, "Progress lines on a terminal.")

# Table 1 of the paper (Omniglot, accuracy %): FDEN from f_ide, and Prototypical Networks on raw images.
PAPER = {"5w1s": {"fden": 88.3, "protonet": 98.8},
         "5w5s": {"fden": 95.4, "protonet": 99.7},
         "20w1s": {"fden": 82.6, "protonet": 96.0}}


def parse_setting(text):
  way, _, shot = text.lower().rstrip("s").partition("w")
  if not (way.isdigit() and shot.isdigit() and int(way) > 0 and int(shot) > 0):
    raise ValueError(f"--settings: {text!r} is not of the form <way>w<shot>s, e.g. 5w1s")
  return int(way), int(shot)


def markdown_table(results):
  pct = lambda r: f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
  rows = ["| setting | FDEN (paper) | ProtoNet (paper) | **f_ide (ours)** | z (no FDEN) | f_sty (lower = better) |",
          "|---|---|---|---|---|---|"]
  for name, r in results["settings"].items():
    paper = PAPER.get(name, {})
    rows.append(f"| {r['way']}-way {r['shot']}-shot | {paper.get('fden', '–')} | {paper.get('protonet', '–')} | "
                f"**{pct(r['f_ide'])}** | {pct(r['z'])} | {pct(r['f_sty'])} |")
  return "\n".join(rows) + "\n"


def main(argv):
  del argv
  from fden_tf import config as config_lib
  from fden_tf import preflight
  try:
    settings = {name: parse_setting(name) for name in FLAGS.settings}
    config = config_lib.get("omniglot_" + FLAGS.preset)
    overrides = {k: v for k, v in (("steps", FLAGS.ali_steps),) if v}
    fden_overrides = {k: v for k, v in (("steps", FLAGS.fden_steps), ("eval_episodes", FLAGS.eval_episodes))
                      if v}
    config = config.replace(data={"data_dir": FLAGS.data_dir, "splits_dir": FLAGS.splits_dir}, ali=overrides,
                            fden=fden_overrides)
    output_dir = FLAGS.output_dir or os.path.join("runs", f"omniglot_{FLAGS.preset}")
    ali_dir = os.path.join(output_dir, "ali_run")
    t = time.time()
    config, data = preflight.check(config, ali_dir, stage="ali")
    load_seconds = time.time() - t
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from fden_tf import files
  from fden_tf import pipeline
  start = time.time()
  print(f"omniglot: {data.train.num_classes} train classes ({len(data.train.images)} images), "
        f"{data.test.num_classes} test classes ({len(data.test.images)} images), loaded in {load_seconds:.0f} s")
  ali_metrics = pipeline.train_and_evaluate(config, ali_dir, stage="ali", show_progress=FLAGS.progress,
                                            export=False, data=data)
  results = {"preset": "omniglot_" + FLAGS.preset, "config": config.to_dict(), "machine": _machine(),
             "ali": {"reconstruction_mse": ali_metrics["ali"]["reconstruction_mse"],
                     "seconds": ali_metrics["seconds"]["ali"], "dir": ali_dir},
             "settings": {}, "data_seconds": load_seconds}
  for name, (way, shot) in settings.items():
    run_dir = os.path.join(output_dir, name)
    run_config = config.replace(fden={"way": way, "shot": shot})
    m = pipeline.train_and_evaluate(run_config, run_dir, stage="fden", ali_dir=ali_dir,
                                    show_progress=FLAGS.progress, export=False, data=data)
    results["settings"][name] = {
        "way": way, "shot": shot, "query": run_config.fden.query, "episodes": m["fewshot"]["episodes"],
        "f_ide": _acc(m["fewshot"]), "z": _acc(m["fewshot_baselines"]["z"]),
        "f_sty": _acc(m["fewshot_baselines"]["f_sty"]), "paper": PAPER.get(name),
        "fden_steps": run_config.fden.steps, "seconds": m["seconds"], "dir": run_dir}
    print(f"{name}: f_ide {100 * m['fewshot']['accuracy']:.2f}% "
          f"(z {100 * m['fewshot_baselines']['z']['accuracy']:.2f}%, "
          f"f_sty {100 * m['fewshot_baselines']['f_sty']['accuracy']:.2f}%)", flush=True)
  # Wall time of this invocation, and the sum of every stage's recorded time (equal for an uninterrupted
  # run; a resumed run's earlier stages count at their recorded times).
  results["wall_seconds_this_invocation"] = time.time() - start + load_seconds
  results["stage_seconds_total"] = load_seconds + results["ali"]["seconds"] + sum(
      sum(r["seconds"].values()) for r in results["settings"].values())
  table = markdown_table(results)
  files.write_json(os.path.join(output_dir, "results.json"), results)
  files.atomic_write(os.path.join(output_dir, "results.md"), lambda f: f.write(table))
  first = next(iter(settings))
  for figure in ("tsne.png", "translation.png"):
    shutil.copyfile(os.path.join(output_dir, first, figure), os.path.join(output_dir, f"omniglot_{figure}"))
  print(table)
  print(f"wrote {output_dir}/results.json and results.md; total {results['stage_seconds_total'] / 60:.1f} min")


def _acc(result):
  return {"accuracy": result["accuracy"], "ci95": result["ci95"]}


def _machine():
  import platform
  return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
          "python": platform.python_version()}


if __name__ == "__main__":
  app.run(main)
