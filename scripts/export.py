"""Export a finished run as a SavedModel for TF Serving: `<export_dir>/<name>/<next version>/`.

    python scripts/export.py --run_dir=runs/glyphs                      # -> saved_models/glyphs/1/
    python scripts/export.py --run_dir=runs/glyphs --export_dir=/srv/models --name=fden
    python scripts/export.py --run_dir=runs/glyphs --benchmark           # and time translate/fewshot_classify
    python scripts/export.py --run_dir=runs/killed --allow_unfinished    # a run whose FDEN did not finish

Flags only live here; the library is fden_tf/export.py. Exit status: 0 exported, 2 bad input or an unfinished
run (one `error:` line, nothing published), 128 + N when signal N (SIGTERM, SIGHUP) stopped it (the unfinished
version removed).
"""

import os
import sys

from absl import flags

from fden_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Output directory of a finished scripts/train.py run on ALI (its own "
                    "ali/, or the --ali_dir it recorded).")
flags.DEFINE_string("export_dir", "saved_models", "Base folder TF Serving polls; the model goes to "
                    "<export_dir>/<name>/<version>/.")
flags.DEFINE_string("name", None, "Model name (default: the run directory's name).")
flags.DEFINE_boolean("allow_unfinished", False, "Export a run whose FDEN has not reached its configured "
                     "steps (refused by default: TF Serving would switch to it); fden_export.json "
                     "records the step.")
flags.DEFINE_boolean("benchmark", False, "After exporting, time translate and fewshot_classify through the "
                     "loaded SavedModel at batch 1 and 64 on this machine.")


def main(argv):
  del argv  # a stray positional argument is refused by cli.parse_flags
  if not FLAGS.run_dir:
    print("error: --run_dir is required (the output directory of a finished scripts/train.py run)",
          file=sys.stderr)
    sys.exit(2)
  if not os.path.isdir(FLAGS.run_dir):
    # Before importing TensorFlow (seconds): a mistyped path answers at once.
    print(f"error: run directory {FLAGS.run_dir} does not exist", file=sys.stderr)
    sys.exit(2)
  cli.import_tensorflow()  # quietly, once the cheap checks passed
  from fden_tf import export
  try:
    version_dir = export.export_run(FLAGS.run_dir, FLAGS.export_dir, FLAGS.name, FLAGS.allow_unfinished)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except export.Interrupted as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.code)
  print(f"wrote {version_dir}")
  if FLAGS.benchmark:
    print("signature          batch  median ms  p90 ms")
    for row in export.benchmark_latency(version_dir):
      print(f"{row['signature']:<18} {row['batch']:>5}  {row['median_ms']:>9.2f}  {row['p90_ms']:>6.2f}")


if __name__ == "__main__":
  cli.run(main)
