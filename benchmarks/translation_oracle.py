"""How well could any factorization translate glyphs with a run's codes? Oracle Entanglers that know the truth.

    python benchmarks/translation_oracle.py --run_dir=runs/glyphs

For a finished glyphs run, fits an Entangler (an MLP) on the training classes from an identity code and a
style code to z, for each pairing of
  identity: "class_mean" (the code's class mean: knows the labels) or "f_ide" (the run's FDEN),
  style:    "true" (glyphs' six true style factors), "z_probe" (the true style as an MLP fit on the
            training classes reads it from z: ground_truth.styles_read_from) or "f_sty" (the run's FDEN),
then scores translation on the test classes exactly as `scripts/evaluate.py` does (the same pairs, 0 = no
translation, 1 = the plugged network's reconstruction of the true target). "class_mean+true" bounds what
the plugged network's decoder side allows; "class_mean+z_probe" what its encoder lets any f_sty computed
from z hold for unseen classes (within what such an MLP finds); "f_ide+f_sty" is what FDEN's own factors
allow with the best Entangler this fit finds; the mixed rows tell which factor falls short. The probe's R^2
per style factor on the test classes is printed and written too.

Prints a table and writes <run_dir>/translation_oracle.json.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fden_tf import cli  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "runs/glyphs", "A finished glyphs run of scripts/train.py.")
flags.DEFINE_integer("steps", 6000, "Training steps of each oracle Entangler (batches of 256).")
flags.DEFINE_integer("pairs", 500, "Translation pairs (scripts/evaluate.py's default: the same pairs).")

RESULTS_FILE = "translation_oracle.json"


def oracle_table(run_dir: str, steps: int, pairs: int) -> tuple:
  """(the six oracle rows, the z probe's R^2 per style factor on the test classes) of a finished glyphs run
  (module docstring)."""
  from fden_tf import plugin, runs, train_fden  # pylint: disable=g-import-not-at-top
  from sklearn import metrics as sk_metrics  # pylint: disable=g-import-not-at-top
  from fden_tf.data import datasets, glyphs  # pylint: disable=g-import-not-at-top
  from fden_tf.metrics import ground_truth  # pylint: disable=g-import-not-at-top
  run = runs.load_run(run_dir)
  data = datasets.load(run.config.data)
  if not ground_truth.has_ground_truth(data.test):
    raise ValueError(f"{run_dir} is a {data.name} run: the oracle needs glyphs' true styles")
  z_train = plugin.encode_all(run.plugged, data.train.images)
  z_test = plugin.encode_all(run.plugged, data.test.images)
  (ide_train, sty_train, _), (ide_test, sty_test, _) = (train_fden.factorise(run.fden, z)
                                                        for z in (z_train, z_test))
  identities = {"class_mean": (ground_truth.class_mean_codes(z_train, data.train.labels),
                               ground_truth.class_mean_codes(z_test, data.test.labels)),
                "f_ide": (ide_train, ide_test)}
  probed = ground_truth.styles_read_from(z_train, data.train.styles, z_test, steps, run.config.seed)
  truth = ground_truth.standardise(data.test.styles, data.train.styles)  # the probe's units
  probe_r2 = dict(zip(glyphs.STYLE_NAMES,
                      sk_metrics.r2_score(truth, probed[1], multioutput="raw_values").tolist()))
  rows = ground_truth.oracle_translation(run.plugged, data.train, data.test, z_train, z_test, identities,
                                         {"z_probe": probed, "f_sty": (sty_train, sty_test)}, pairs,
                                         run.config.seed, steps)
  return rows, probe_r2


def format_table(rows: dict) -> str:
  lines = ["| identity + style | fit error on the test classes | translation MSE / SSIM score |",
           "|---|---|---|"]
  lines += [f"| {name} | {r['fit_error']:.3f} | {r['mse']:.2f} / {r['ssim']:.2f} |" for name, r in rows.items()]
  return "\n".join(lines)


def main(argv):
  del argv
  for flag in ("steps", "pairs"):
    if getattr(FLAGS, flag) <= 0:
      cli.error_exit(f"--{flag} must be positive, got {getattr(FLAGS, flag)}")
  if not os.path.isdir(FLAGS.run_dir):
    cli.error_exit(f"--run_dir {FLAGS.run_dir} is not a directory")
  cli.import_tensorflow()
  from fden_tf import files  # pylint: disable=g-import-not-at-top
  try:
    rows, probe_r2 = oracle_table(FLAGS.run_dir, FLAGS.steps, FLAGS.pairs)
  except (ValueError, FileNotFoundError) as e:
    cli.error_exit(str(e))
  files.write_json(os.path.join(FLAGS.run_dir, RESULTS_FILE),
                   {"steps": FLAGS.steps, "pairs": FLAGS.pairs, "rows": rows, "z_probe_r2": probe_r2})
  print(format_table(rows))
  print("style R^2 the z probe reaches on the test classes: "
        + ", ".join(f"{name} {r2:.2f}" for name, r2 in probe_r2.items()))
  print(f"wrote {FLAGS.run_dir}/{RESULTS_FILE}")


if __name__ == "__main__":
  cli.run(main)
