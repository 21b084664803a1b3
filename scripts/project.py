"""Write the TensorBoard projector (z, f_ide, f_sty of held-out samples) for any finished run.

    python scripts/project.py --run_dir=runs/glyphs
    tensorboard --logdir runs/glyphs          # then open the Projector tab
"""

import sys

from absl import flags

from fden_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Output directory of a finished scripts/train.py run.")
flags.DEFINE_integer("points", 500, "Held-out samples to embed.")


def main(argv):
  del argv
  if not FLAGS.run_dir:
    print("error: --run_dir is required", file=sys.stderr)
    sys.exit(2)
  if FLAGS.points <= 0:
    print(f"error: --points must be positive, got {FLAGS.points}", file=sys.stderr)
    sys.exit(2)
  cli.import_tensorflow()  # quietly, once the cheap checks passed
  import os
  from fden_tf import pipeline
  from fden_tf import plugin
  from fden_tf import runs
  from fden_tf import summaries
  from fden_tf import train_fden
  from fden_tf.data import datasets
  try:
    run = runs.load_run(FLAGS.run_dir)
    data = datasets.load(run.config.data)
    z_test = plugin.encode_all(run.plugged, data.test.images)
    logdir = os.path.join(FLAGS.run_dir, summaries.LOGDIR)
    f_ide, f_sty, _ = train_fden.factorise(run.fden, z_test)
    pipeline.write_projector(logdir, z_test, f_ide, f_sty, data.test, seed=run.config.seed, points=FLAGS.points)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote the projector to {logdir}; run: tensorboard --logdir {FLAGS.run_dir}")


if __name__ == "__main__":
  cli.run(main)
