"""What every script under scripts/ shares around absl's `app.run`: exit statuses and a quiet TensorFlow.

    from fden_tf import cli
    if __name__ == "__main__":
      cli.run(main)

- A flag error (unknown flag, bad value, failed validator) is one `error: ...` line and exit status 2, the
  status every script gives bad input (absl's own parser exits 1, the status train.py gives divergence).
- A stray positional argument (`train.py preset=smoke`, a forgotten `--`) is refused with exit 2 instead of
  being ignored while the default job runs.
- `--help`, `--helpshort`, `--helpfull` print the flags and exit 0 (absl exits 1 after printing them).
- TensorFlow's C++ start-up log (the oneDNN banner, printed twice, "Could not find cuda drivers", "failed
  call to cuInit" on a CPU-only machine) is silenced by TF_CPP_MIN_LOG_LEVEL=3 unless `--verbosity` asks
  for more (>= 1, absl's debug level) or the caller set TF_CPP_MIN_LOG_LEVEL itself. It must be set before
  TensorFlow is imported, which the scripts do only inside `main`. TensorFlow's Python log keeps its
  warnings only, likewise.

Imports nothing of TensorFlow: a bad command line fails in well under a second.
"""

import contextlib
import logging
import os
import sys

from absl import app
from absl import flags

# TF_CPP_MIN_LOG_LEVEL=3 keeps only FATAL: the CUDA messages of a CPU-only machine are ERROR level.
QUIET_TF_LOG_LEVEL = "3"


def error_exit(message: str, code: int = 2):
  """The one-line error every script gives bad input."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def parse_flags(argv):
  """absl's flags_parser with the project's exit statuses (module docstring). Returns [program]."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    error_exit(f"{str(e).splitlines()[0]} (see {os.path.basename(argv[0])} --help)")
  except SystemExit as e:  # the help flags print the usage, then exit 1: asking for help is no failure
    sys.exit(0 if e.code == 1 else e.code)
  if len(rest) > 1:
    error_exit(f"unexpected argument(s) {' '.join(rest[1:])}; every option is a --flag=value "
               f"(e.g. --{rest[1].lstrip('-')})")
  return rest


_quiet = False


def quiet_tensorflow(verbosity: int):
  """Sets TF_CPP_MIN_LOG_LEVEL before TensorFlow is imported, unless the user set it or wants more."""
  global _quiet
  if verbosity < 1 and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = QUIET_TF_LOG_LEVEL
    _quiet = True


@contextlib.contextmanager
def stderr_to_devnull():
  """File descriptor 2 pointed at /dev/null inside the block (what C++ libraries write there too)."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def import_tensorflow():
  """Imports TensorFlow; when quiet, with file descriptor 2 pointed at /dev/null meanwhile.

  TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow's shared libraries log while they load, before
  absl::InitializeLog runs ("Could not find cuda drivers on your machine", twice, on a CPU-only machine), so
  the import itself is silenced. A failing import still raises, and its traceback prints after stderr is
  restored. Scripts call this after their cheap checks, so bad input never waits for TensorFlow.
  """
  if not _quiet or "tensorflow" in sys.modules:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    return
  with stderr_to_devnull():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name
  # TensorFlow's own INFO lines through absl ("Sharding callback duration" at every checkpoint, signature
  # input names at export) are dropped; its warnings, and the scripts' INFO lines, still print.
  package = os.path.dirname(sys.modules["tensorflow"].__file__) + os.sep
  logging.getLogger("absl").addFilter(
      lambda record: record.levelno >= logging.WARNING or not record.pathname.startswith(package))


def run(main, argv=None):
  """app.run(main) with parse_flags, and TensorFlow quiet by default."""

  def _main(args):
    quiet_tensorflow(flags.FLAGS["verbosity"].value if "verbosity" in flags.FLAGS else 0)
    return main(args)

  app.run(_main, argv=argv, flags_parser=parse_flags)
