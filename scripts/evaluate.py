"""Measure the disentanglement of a finished run: prints a report, writes <run_dir>/disentanglement.json.

    python scripts/evaluate.py --run_dir=runs/glyphs
    python scripts/evaluate.py --run_dir=runs/mine --encoder=enc.keras --decoder=dec.keras
    python scripts/evaluate.py --run_dir=runs/oxford_flowers102 --shot=5   # another few-shot task

What every number means: README, "Measuring disentanglement". Flags only live here; the library function
is fden_tf.metrics.evaluate_run.
"""

import sys

from absl import flags

from fden_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "runs/glyphs", "Output directory of scripts/train.py to evaluate.")
flags.DEFINE_string("encoder", None, "The run's own frozen encoder (.keras or SavedModel), with --decoder.")
flags.DEFINE_string("decoder", None, "The run's own frozen decoder (.keras or SavedModel), with --encoder.")
flags.DEFINE_integer("samples", 2000, "Held-out samples for distance correlation, fidelity and ground-truth metrics.")
flags.DEFINE_integer("mi_samples", 4000, "Held-out samples each fresh mutual-information statistician sees.")
flags.DEFINE_integer("mine_steps", 600, "Training steps of each fresh mutual-information statistician.")
flags.DEFINE_integer("translation_pairs", 500, "Image pairs for factor mixing and, on glyphs, translation fidelity.")
flags.DEFINE_integer("way", None, "Classes per few-shot test episode (default: the run's task).")
flags.DEFINE_integer("shot", None, "Support samples per class in the test episodes (default: the run's), "
                     "e.g. 5 for the 5-shot accuracy of an FDEN trained on 1-shot episodes.")
flags.DEFINE_integer("query", None, "Query samples per class in the test episodes (default: the run's).")


def main(argv):
  del argv
  for flag in ("samples", "mi_samples", "mine_steps", "translation_pairs", "way", "shot", "query"):
    if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) <= 0:
      cli.error_exit(f"--{flag} must be positive, got {getattr(FLAGS, flag)}")
  if bool(FLAGS.encoder) != bool(FLAGS.decoder):
    cli.error_exit("--encoder and --decoder go together")
  cli.import_tensorflow()  # quietly, once the cheap checks passed
  from fden_tf import metrics
  from fden_tf import plugin
  try:
    plugged = plugin.load_saved(FLAGS.encoder, FLAGS.decoder) if FLAGS.encoder else None
    results = metrics.evaluate_run(FLAGS.run_dir, plugged=plugged,
                                   samples=FLAGS.samples, mi_samples=FLAGS.mi_samples,
                                   mine_steps=FLAGS.mine_steps,
                                   translation_pairs=FLAGS.translation_pairs, way=FLAGS.way,
                                   shot=FLAGS.shot, query=FLAGS.query)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(metrics.format_report(results))
  print(f"wrote {FLAGS.run_dir}/{metrics.RESULTS_FILE}")


if __name__ == "__main__":
  cli.run(main)
