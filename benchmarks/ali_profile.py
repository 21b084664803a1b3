"""Where the time of one ALI training step goes (issue #8, item 4), and what moves its FLOP rate.

    python benchmarks/ali_profile.py                 # profile + timing of the CPU preset's step (~1.5 min)
    python benchmarks/ali_profile.py --noprofile     # timing only
    python benchmarks/ali_profile.py --levers        # the levers table: one child process per setting (~10 min)
    python benchmarks/ali_profile.py --compare_layers --synthetic_images   # fden_tf.layers vs Keras's (~2 min)
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/ali_profile.py   # any setting read when TensorFlow starts

The step is the one `benchmarks/throughput.py` rates in its item 4: the CPU preset's ALI (`config.cpu().ali`,
or --width / --batch_size) and the ALI trainer's compiled step (`train_ali.make_train_step`, one device),
built by throughput.py's own helpers and fed batches made beforehand. It reports:

1. Timing: ms per step (medians of blocks of --block steps) and the FLOP/s of a 2048 x 2048 float32 matmul
   (throughput.py's `MatmulRate`, the faster of two timings after each block), timed in turns in the same
   process, so both sides see the same load. FLOPs per step are `fden_tf.flops.graph_flops`, as
   throughput.py counts them: the products of the ops that run (those the step's outputs and side effects
   depend on, as TensorFlow prunes the function when it runs it), so the gradients a tape builds that
   nothing uses (the discriminator's tape.gradient through the encoder and generator, the generator's
   through the discriminator's filters) are not counted.
2. With --profile (the default): `tf.profiler` over --profile_steps steps, converted with the profiler
   plugin's "framework_op_stats" tool; self time per op type and per op (share of the summed self time of
   all ops, idle excluded; with inter-op parallelism ops overlap, so shares are of thread time, not of
   wall time), with the FLOP/s of each op type and op that does products (self time, FLOPs of the ops
   that run).
3. With --levers: this script again in child processes, one per setting (oneDNN on/off, inter-op and
   intra-op threads, batch size, width, XLA, --keras_layers), and a table of step ms and % of the
   matmul rate.

Settings read when TensorFlow starts (TF_ENABLE_ONEDNN_OPTS, TF_NUM_INTEROP_THREADS,
TF_NUM_INTRAOP_THREADS) are taken from the environment, so --levers sets them per child.
"""

import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import fden_tf  # pylint: disable=g-import-not-at-top,unused-import  (before TensorFlow: its CPU settings)
import numpy as np
import tensorflow as tf

import throughput  # benchmarks/throughput.py: the step is built with its helpers
from fden_tf import ali as ali_lib
from fden_tf import config as config_lib
from fden_tf import flops
from fden_tf import layers
from fden_tf.data import datasets

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "cpu", "The preset whose ALI step is measured (flowers_cpu: the CelebA model).")
flags.DEFINE_float("width", None, "ALI width (default: the CPU preset's).")
flags.DEFINE_integer("batch_size", None, "ALI batch size (default: the CPU preset's).")
flags.DEFINE_boolean("xla", False, "Recompile the trainer's step with XLA (jit_compile=True).")
flags.DEFINE_boolean("keras_layers", False, "Lever, backwards: build the ALI with Keras's own Conv2D, "
                     "Conv2DTranspose and BatchNormalization instead of fden_tf.layers' (as before them).")
flags.DEFINE_boolean("profile", True, "Profile the step and print the per-op breakdown.")
flags.DEFINE_integer("profile_steps", 20, "Steps under the profiler.")
flags.DEFINE_integer("rounds", 5, "Timing rounds: a block of steps, then two matmul timings.")
flags.DEFINE_integer("block", 8, "Steps in a timing block.")
flags.DEFINE_integer("top", 25, "Ops listed by self time.")
flags.DEFINE_boolean("synthetic_images", False, "Uniform random images instead of loading the preset's "
                     "data set (same shapes; timings do not depend on pixel values; saves ~15 s).")
flags.DEFINE_boolean("json", False, "Print one line 'RESULT {json}' with the timing (for --levers).")
flags.DEFINE_boolean("levers", False, "Run the levers table (child processes) instead.")
flags.DEFINE_boolean("compare_layers", False, "Instead: time the step with fden_tf.layers against the same "
                     "step with Keras's own layers, in turns in one process (noise-robust A/B).")
flags.DEFINE_string("logdir", None, "Profiler log directory (default: a temporary one).")

MATMUL_SIZE = 2048

# (label, environment, flags) for --levers. Each child times the step against the matmul on its own.
LEVERS = (
    ("default (oneDNN on, fden_tf.layers)", {}, []),
    ("TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's own kernels)", {"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    ("Keras's layers (not fden_tf.layers)", {}, ["--keras_layers"]),
    ("TF_ENABLE_ONEDNN_OPTS=0 + Keras's layers", {"TF_ENABLE_ONEDNN_OPTS": "0"}, ["--keras_layers"]),
    ("TF_NUM_INTEROP_THREADS=1", {"TF_NUM_INTEROP_THREADS": "1"}, []),
    ("TF_NUM_INTRAOP_THREADS=1", {"TF_NUM_INTRAOP_THREADS": "1"}, []),
    ("XLA (jit_compile the whole step)", {}, ["--xla"]),
    ("batch 100", {}, ["--batch_size=100"]),
    ("batch 256", {}, ["--batch_size=256", "--block=3"]),
    ("width 0.5", {}, ["--width=0.5", "--block=3"]),
    ("width 1", {}, ["--width=1", "--block=2", "--rounds=3"]),
)
_ENV_KEYS = ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTEROP_THREADS", "TF_NUM_INTRAOP_THREADS")


# ------------------------------------------------------------------------------------------------------
# The step.

def build_step(width=None, batch_size=None, synthetic_images=False, xla=False, keras_layers=False,
               preset="cpu"):
  """(step(batch, poison), batches, ali config): the trainer's compiled ALI step as throughput.py builds
  it (`_ali`, `ali_trainer_parts`, `_batches`) for a preset's ALI (the CPU preset's by default), optionally
  resized; with keras_layers, an ALI of Keras's own layers instead of fden_tf.layers' (same weights and
  maths)."""
  cfg = config_lib.get(preset)
  changes = {k: v for k, v in (("width", width), ("batch_size", batch_size)) if v is not None}
  cfg = cfg.replace(ali=changes) if changes else cfg
  if synthetic_images:
    size = config_lib.ARCHITECTURE_IMAGE_SIZE[cfg.ali.architecture]
    images = np.random.default_rng(0).uniform(size=(4096, size, size, cfg.data.channels)).astype(np.float32)
  else:
    images = datasets.load(cfg.data).train.images
  if keras_layers:
    ali_lib.layers = layers.KERAS_LAYERS
  try:
    ali, d_opt, g_opt = throughput._ali(cfg.ali, images)  # pylint: disable=protected-access
  finally:
    ali_lib.layers = layers
  step, inputs = throughput.ali_trainer_parts(ali, d_opt, g_opt, images, cfg.ali, cfg.seed)
  batches = throughput._batches(inputs, 16)  # pylint: disable=protected-access
  if xla:
    step = throughput._xla(step)  # pylint: disable=protected-access
  return step, batches, cfg.ali


# ------------------------------------------------------------------------------------------------------
# FLOPs: per op that runs.

def op_flops(step, *args):
  """({op name: FLOPs} of every product that runs in the step's graph and the functions it calls, {bias
  add: the product it adds to}). Products are those `fden_tf.flops` counts, and an op runs when it is in
  `flops.running_ops` of its graph (the step's, or that of a function a running op calls), as in
  `flops.graph_flops`. Grappler fuses a product and the bias add it feeds into one op named after the bias
  add, hence the aliases."""
  graph = step.get_concrete_function(*args).graph
  per_op, aliases, visited = {}, {}, set()

  def visit(g):
    for op in flops.running_ops(g):
      if op.type in ("BiasAdd", "BiasAddV1") and op.inputs[0].op.type in flops.OP_COUNTERS:
        aliases[op.name] = op.inputs[0].op.name
      if op.type in flops.OP_COUNTERS:
        per_op[op.name] = flops.OP_COUNTERS[op.type](op)
      for name in flops._function_names(op):  # pylint: disable=protected-access
        if name not in visited:
          visited.add(name)
          visit(flops._function_graph(g, graph, name))  # pylint: disable=protected-access

  visit(graph)
  return per_op, aliases


# ------------------------------------------------------------------------------------------------------
# fden_tf.layers against Keras's (timed with throughput.time_steps).

def compare_layers():
  """fden_tf.layers against Keras's own layers: the same step, both ALIs in this process, timed in turns."""
  steps = {}
  for label, keras_layers in (("Keras's layers", True), ("fden_tf.layers", False)):
    step, batches, c = build_step(FLAGS.width, FLAGS.batch_size, FLAGS.synthetic_images, FLAGS.xla,
                                  keras_layers, FLAGS.preset)
    steps[label] = (step, batches)
  step, batches = steps["fden_tf.layers"]
  step_flops = flops.graph_flops(step, batches[0], tf.constant(0.0))
  timing = throughput.time_steps(steps, FLAGS.rounds, FLAGS.block, MATMUL_SIZE)
  print(f"\nALI step, width {c.width:g}, batch {c.batch_size}: {FLAGS.rounds} rounds of {FLAGS.block} steps of "
        f"each, in turns; {step_flops / 1e9:.3f} GFLOP/step; load average {os.getloadavg()[0]:.1f}")
  print("| layers | ms/step (median) | % of the matmul rate | ms/step per round |\n|---|---|---|---|")
  for label, t in timing.items():
    print(f"| {label} | {1e3 * t['seconds']:.0f} | {100 * step_flops / t['seconds'] / t['matmul']:.0f}% | "
          f"{', '.join(f'{1e3 * s:.0f}' for s, _ in t['rounds'])} |")
  old, new = (timing[k]["rounds"] for k in steps)
  ratios = sorted(a / b for (a, _), (b, _) in zip(old, new))
  print(f"fden_tf.layers' speed-up per round: {ratios[0]:.2f}x to {ratios[-1]:.2f}x, median "
        f"{throughput._median(ratios):.2f}x")  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------------------
# Profile.

def profile(step, batches, steps, logdir):
  """(rows, wall seconds per step): the "framework_op_stats" tool's rows over `steps` profiled steps, as
  dicts with "type", "name", "occurrences", "self_us" (total over the steps)."""
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # pylint: disable=g-import-not-at-top
  poison = tf.constant(0.0)
  for i in range(2):
    throughput._read(step(batches[i], poison))  # pylint: disable=protected-access
  tf.profiler.experimental.start(logdir)
  t = time.perf_counter()
  for i in range(steps):
    throughput._read(step(batches[i % len(batches)], poison))  # pylint: disable=protected-access
  wall = (time.perf_counter() - t) / steps
  tf.profiler.experimental.stop()
  path = max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
  data, ok = _pywrap_profiler_plugin.xspace_to_tools_data([path], "framework_op_stats")
  if not ok:
    raise RuntimeError(f"profiler conversion failed: {data[:300]!r}")
  table = json.loads(data)[0]
  ids = [c["id"] for c in table["cols"]]
  rows = []
  for row in table["rows"]:
    values = dict(zip(ids, [cell["v"] if cell else None for cell in row["c"]]))
    rows.append({"type": values["type"], "name": values["operation"], "occurrences": values["occurrences"],
                 "self_us": values["total_self_time"]})
  return rows, wall


def _base_type(op_type):
  """oneDNN's rewritten op types under the op they implement (_MklNativeConv2DBackpropFilter ->
  Conv2DBackpropFilter) so that both settings read alike; fused ops keep their own names."""
  for prefix in ("_MklNative", "_Mkl"):
    if op_type.startswith(prefix):
      return op_type[len(prefix):] if not op_type.startswith(prefix + "Fused") else "_" + op_type[len(prefix):]
  return op_type


def breakdown(rows, per_op, aliases, steps, wall_seconds):
  """(text tables: op types and ops by self time, with FLOP rates where they do products; FLOPs per step of
  the products that ran)."""
  rows = [r for r in rows if r["type"] != "IDLE"]
  per_op = {**per_op, **{bias: per_op[product] for bias, product in aliases.items()}}
  busy = sum(r["self_us"] for r in rows)
  by_type = collections.defaultdict(lambda: [0.0, 0, 0])  # self us, ops, FLOPs per step
  for r in rows:
    entry = by_type[_base_type(r["type"])]
    entry[0] += r["self_us"]
    entry[1] += 1
    entry[2] += per_op.get(r["name"], 0)
  ran_flops = sum(per_op.get(r["name"], 0) for r in rows)
  lines = [f"profiled {steps} steps: op self time {busy / 1e3 / steps:.1f} ms/step (thread time; wall "
           f"{1e3 * wall_seconds:.1f} ms/step); products that ran {ran_flops / 1e9:.3f} GFLOP/step",
           "", "| op type | ops | self ms/step | share | GFLOP/step | GFLOP/s (self time) |",
           "|---|---|---|---|---|---|"]
  for op_type, (us, n, f) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
    rate = f"{f / (us / 1e6 / steps) / 1e9:.1f}" if f else ""
    lines.append(f"| {op_type} | {n} | {us / 1e3 / steps:.2f} | {100 * us / busy:.1f}% | "
                 f"{f / 1e9:.3f} | {rate} |" if f else
                 f"| {op_type} | {n} | {us / 1e3 / steps:.2f} | {100 * us / busy:.1f}% | | |")
  product = sum(us for t, (us, _, f) in by_type.items() if f)
  lines.append(f"\nops with products: {100 * product / busy:.1f}% of self time, "
               f"{ran_flops / (product / 1e6 / steps) / 1e9:.1f} GFLOP/s over their self time; "
               f"everything else {100 * (1 - product / busy):.1f}%")
  lines += ["", f"top {FLAGS.top} ops by self time:", "| op | type | self ms/step | share | MFLOP | GFLOP/s |",
            "|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["self_us"])[:FLAGS.top]:
    f = per_op.get(r["name"], 0)
    ms = r["self_us"] / 1e3 / steps
    lines.append(f"| {r['name']} | {_base_type(r['type'])} | {ms:.2f} | {100 * r['self_us'] / busy:.1f}% | "
                 + (f"{f / 1e6:.0f} | {f / (ms / 1e3) / 1e9:.1f} |" if f else " | |"))
  return "\n".join(lines), ran_flops


# ------------------------------------------------------------------------------------------------------
# Levers.

def run_levers():
  rows = ["| setting | ms/step | GFLOP | matmul GFLOP/s | % of matmul | per round |", "|---|---|---|---|---|---|"]
  print("\n".join(rows), flush=True)
  for label, env, extra in LEVERS:
    env = {**{k: v for k, v in os.environ.items() if k not in _ENV_KEYS}, **env}
    command = [sys.executable, os.path.abspath(__file__), "--noprofile", "--json", "--synthetic_images"] + extra
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
      print(f"| {label} | failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
      continue
    r = json.loads(line[len("RESULT "):])
    print(f"| {label} | {r['ms']:.0f} | {r['gflop']:.2f} | {r['matmul_gflops']:.0f} | {100 * r['fraction']:.0f}% | "
          f"{', '.join(f'{100 * x:.0f}' for x in r['fractions'])} |", flush=True)


def main(argv):
  del argv
  if FLAGS.levers:
    run_levers()
    return
  if FLAGS.compare_layers:
    compare_layers()
    return
  step, batches, c = build_step(FLAGS.width, FLAGS.batch_size, FLAGS.synthetic_images, FLAGS.xla,
                                FLAGS.keras_layers, FLAGS.preset)
  poison = tf.constant(0.0)
  step_flops = flops.graph_flops(step, batches[0], poison)
  timing = throughput.time_steps({"step": (step, batches)}, FLAGS.rounds, FLAGS.block, MATMUL_SIZE)["step"]
  s, m = timing["seconds"], timing["matmul"]
  settings = {k: os.environ.get(k, "") for k in _ENV_KEYS}
  result = {"width": c.width, "batch_size": c.batch_size, "xla": FLAGS.xla,
            "keras_layers": FLAGS.keras_layers, "env": settings, "ms": 1e3 * s,
            "gflop": step_flops / 1e9, "matmul_gflops": m / 1e9, "fraction": step_flops / s / m,
            "fractions": [step_flops / sec / mm for sec, mm in timing["rounds"]]}
  if FLAGS.json:
    print("RESULT " + json.dumps(result), flush=True)
  print(f"\nALI step: width {c.width:g}, batch {c.batch_size}, XLA {FLAGS.xla}, "
        f"{'Keras' if FLAGS.keras_layers else 'fden_tf'} layers, "
        f"{', '.join(f'{k}={v}' for k, v in settings.items() if v) or 'default threading and oneDNN'}; "
        f"load average {os.getloadavg()[0]:.1f}")
  print(f"  {1e3 * s:.1f} ms/step (median of {FLAGS.rounds} blocks of {FLAGS.block}); matmul {MATMUL_SIZE}^2 "
        f"{m / 1e9:.1f} GFLOP/s in the same rounds")
  print(f"  {step_flops / 1e9:.3f} GFLOP/step (flops.graph_flops, as throughput.py) -> {step_flops / s / 1e9:.1f} "
        f"GFLOP/s = {100 * step_flops / s / m:.0f}% of the matmul rate "
        f"(rounds: {', '.join(f'{100 * x:.0f}%' for x in result['fractions'])})")
  if FLAGS.profile:
    logdir = FLAGS.logdir or tempfile.mkdtemp(prefix="ali_profile_")
    per_op, aliases = op_flops(step, batches[0], poison)
    rows, wall = profile(step, batches, FLAGS.profile_steps, logdir)
    text, ran = breakdown(rows, per_op, aliases, FLAGS.profile_steps, wall)
    print("\n" + text)
    if abs(ran - step_flops) > 1e-3 * step_flops:
      print(f"\nnote: the profile's ops did {ran / 1e9:.3f} GFLOP/step, flops.graph_flops counts "
            f"{step_flops / 1e9:.3f}")


if __name__ == "__main__":
  app.run(main)
