"""Train ALI and FDEN, evaluate few-shot accuracy from f_ide, draw the translation figure.

    python scripts/train.py                                   # the default main job, glyphs, CPU preset
    python scripts/train.py --fden_steps=500 --output_dir=/tmp/run
    python scripts/train.py --stage=fden --ali_dir=runs/glyphs --way=20 --output_dir=runs/glyphs-20w
    python scripts/train.py --stage=fden --encoder=enc.keras --decoder=dec.keras   # your own network
    python scripts/train.py --flagfile=my.flags

Flags only live here; the library receives one Config (fden_tf/config.py).
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", "cpu", ["cpu", "paper", "smoke"], "Named configuration preset (fden_tf/config.py).")
flags.DEFINE_string("dataset", "glyphs", "Dataset name.")
flags.DEFINE_string("data_dir", None, "Folder the dataset is read from (datasets that need one).")
flags.DEFINE_string("output_dir", "runs/glyphs", "Where checkpoints, metrics and figures go; re-running the "
                    "same command on it resumes.")
flags.DEFINE_enum("stage", "all", ["all", "ali", "fden"], "Train ALI then FDEN (all), or one of them.")
flags.DEFINE_string("ali_dir", None, "Output directory of an earlier ALI run to plug FDEN into.")
flags.DEFINE_string("encoder", None, "Your own frozen encoder (.keras file or SavedModel dir), with --decoder.")
flags.DEFINE_string("decoder", None, "Your own frozen decoder (.keras file or SavedModel dir), with --encoder.")
flags.DEFINE_integer("way", None, "Classes per episode (C).")
flags.DEFINE_integer("shot", None, "Support samples per class (K).")
flags.DEFINE_integer("query", None, "Query samples per class, in training and evaluation episodes.")
flags.DEFINE_integer("ali_steps", None, "ALI training steps.")
flags.DEFINE_integer("fden_steps", None, "FDEN training steps (each a batch of episodes).")
flags.DEFINE_integer("eval_episodes", None, "Test episodes for the few-shot accuracy (paper: 1000).")
flags.DEFINE_integer("latent_dim", None, "ALI latent size (Dim).")
flags.DEFINE_float("ali_reconstruction_weight", None, "Weight of ALI's l2 reconstruction term (paper "
                   "Appendix B.2); 0 disables it.")
flags.DEFINE_integer("seed", None, "Random seed (data, initialisation, episodes).")
flags.DEFINE_boolean("progress", True, "Show progress lines with ETA (--noprogress to silence).")
flags.DEFINE_boolean("overwrite", False, "Allow an --output_dir holding a run of another configuration.")


def build_config():
  from fden_tf import config as config_lib
  config = config_lib.get(FLAGS.preset)
  data = {"dataset": FLAGS.dataset, "data_dir": FLAGS.data_dir}
  ali = {k: v for k, v in {"steps": FLAGS.ali_steps, "latent_dim": FLAGS.latent_dim,
                           "reconstruction_weight": FLAGS.ali_reconstruction_weight}.items() if v is not None}
  fden = {k: v for k, v in {"way": FLAGS.way, "shot": FLAGS.shot, "query": FLAGS.query,
                            "steps": FLAGS.fden_steps, "eval_episodes": FLAGS.eval_episodes}.items()
          if v is not None}
  for flag in ("ali_steps", "fden_steps", "way", "shot", "query", "eval_episodes", "latent_dim"):
    if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) <= 0:
      raise ValueError(f"--{flag} must be positive, got {getattr(FLAGS, flag)}")
  if FLAGS.ali_reconstruction_weight is not None and FLAGS.ali_reconstruction_weight < 0:
    raise ValueError(f"--ali_reconstruction_weight must be >= 0, got {FLAGS.ali_reconstruction_weight}")
  top = {"progress": FLAGS.progress and config.progress}
  if FLAGS.seed is not None:
    top["seed"] = FLAGS.seed
    data["seed"] = FLAGS.seed
  return config.replace(data=data, ali=ali, fden=fden, **top)


def main(argv):
  del argv
  from fden_tf import pipeline
  from fden_tf import plugin
  try:
    config = build_config()
    plugged = None
    if FLAGS.encoder or FLAGS.decoder:
      if not (FLAGS.encoder and FLAGS.decoder):
        raise ValueError("--encoder and --decoder go together")
      if FLAGS.stage != "fden":
        raise ValueError("plugging your own --encoder/--decoder needs --stage=fden")
      plugged = plugin.load_saved(FLAGS.encoder, FLAGS.decoder)
    metrics = pipeline.train_and_evaluate(config, FLAGS.output_dir, FLAGS.stage, FLAGS.ali_dir, plugged,
                                          FLAGS.overwrite)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if "fewshot" in metrics:
    from fden_tf import fewshot
    print(fewshot.format_result(metrics["fewshot"]))
    for name, result in metrics["fewshot_baselines"].items():
      print("  baseline " + fewshot.format_result(result, name))
  print(f"wrote {FLAGS.output_dir}/metrics.json" +
        (f" and {FLAGS.output_dir}/translation.png" if "fewshot" in metrics else ""))
  logging.info("metrics: %s", json.dumps(metrics))


if __name__ == "__main__":
  app.run(main)
