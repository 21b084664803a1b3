"""How close training gets to this machine's limit (issue #8): one command, one process, one table.

    python benchmarks/throughput.py           # 10 minutes on this project's 2-core CPU (while shared)
    python benchmarks/throughput.py --tiny    # toy sizes, to check that everything runs (tests)
    python benchmarks/throughput.py --memory  # also the default main job's peak memory (+9 min)
    python benchmarks/throughput.py --sections= \
        --memory_command="python benchmarks/omniglot.py --output_dir={tmp}"   # only some command's memory

Measured side by side, each against its baseline and its target:

1. FDEN training at the paper's episode sizes, episodes/s: the project's trainer (on the latent cache)
   against the naive plug-in that puts every image of every episode through the frozen encoder at every
   step (the trainer's own compiled step, fed freshly encoded codes).
2. The trainer's FDEN step eager, as `tf.function` (its default), compiled by XLA, and in mixed precision.
3. ALI training, images/s: the project's trainer (`train_ali.train`: loop, input pipeline, distribution
   wrapper, finite-step guard, logs, TensorBoard summaries, checkpoints) against a bare GradientTape
   step of the same architecture and batch written here.
4. FLOPs of an ALI and an FDEN step (from their graphs' matmul and convolution shapes, `fden_tf.flops`)
   per second of step time, against the FLOP/s of a 2048 x 2048 float32 matmul measured between the
   same trainer's windows.
5. Few-shot evaluation of 1,000 episodes of 20-way 1-shot on cached latents: vectorised over episodes
   (`fewshot.evaluate`) against a per-episode Python loop.
6. Input pipelines alone, images/s, against what ALI training consumes.
7. Peak resident memory of this process and, with --memory / --memory_command, of the default main job
   or any command (e.g. the Omniglot benchmark) run as a child process.

How it times: weights are freshly initialised (no timing depends on their values; cached latents are
standardised so that the losses move). A trainer's rate comes from its logging windows after the first
(which traces); a log line with its summaries and a checkpoint with its images are timed apart and charged
at the preset's intervals. Each baseline runs in blocks between the trainer's windows, and the variants
of item 2 in turns, so that on a shared machine both sides of every ratio see the same load. Medians
throughout. The table is printed as markdown; everything goes to --output as JSON.
"""

import dataclasses
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's fden_tf, as `python benchmarks/throughput.py` runs from anywhere

import fden_tf  # pylint: disable=g-import-not-at-top,unused-import  (before TensorFlow: its CPU settings)
import keras  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from fden_tf import config as config_lib
from fden_tf import distribute
from fden_tf import fden as fden_lib
from fden_tf import fewshot
from fden_tf import flops
from fden_tf import losses
from fden_tf import plugin
from fden_tf import summaries as summaries_lib
from fden_tf import train_ali
from fden_tf import train_fden
from fden_tf import training_loop
from fden_tf.data import datasets
from fden_tf.data import episodes as episodes_lib

SECTIONS = ("fden", "variants", "ali", "fewshot", "pipeline")
GB = 1024 ** 3

FLAGS = flags.FLAGS
flags.DEFINE_boolean("tiny", False, "Toy sizes, to check that every measurement runs.")
flags.DEFINE_string("output", os.path.join("benchmarks", "results", "throughput.json"), "Where the JSON goes.")
flags.DEFINE_list("sections", list(SECTIONS), "Measurements: fden (item 1), variants (2), ali (3 and the "
                  "consumption of 6), fewshot (5), pipeline (6). Item 4 comes with fden and ali, item 7 "
                  "always.")
flags.DEFINE_boolean("memory", False, "Also run the default main job (scripts/train.py, about 9 minutes on "
                     "2 cores) as a child process and report its peak resident memory.")
flags.DEFINE_multi_string("memory_command", [], "A command whose peak resident memory to report (repeatable); "
                          "{tmp} becomes a fresh temporary directory.")


@dataclasses.dataclass(frozen=True)
class Sizes:
  """The presets measured, and how many steps are timed."""
  main: config_lib.Config  # the default main job (CPU preset): ALI, few-shot, input pipeline
  paper: config_lib.Config  # the paper's episode sizes, FDEN and encoder (ALI SVHN, width 1): item 1
  paper_classes: int  # training classes whose images are cached (a step's cost does not depend on it)
  windows: int  # timed trainer windows, after the first (which traces)
  fden_window: int  # steps in an FDEN trainer window
  naive_block: int  # naive plug-in steps between two FDEN trainer windows
  ali_window: int  # steps in an ALI trainer window
  bare_block: int  # bare (and stand-alone) ALI steps between two ALI trainer windows
  variant_sizes: tuple  # item 2 at "CPU preset" and/or "paper sizes"
  variants: tuple  # item 2's variants ("mixed": mixed precision)
  variant_rounds: int  # item 2: rounds of one block per variant
  variant_block: int  # item 2: steps a block
  paper_ali_rounds: int  # item 4: rounds of (a block of the paper-size ALI step, two matmul timings)
  paper_ali_block: int
  fewshot_episodes: int
  fewshot_way: int
  matmul_size: int
  pipeline_batches: int


def sizes(tiny: bool) -> Sizes:
  if tiny:
    # Tracing dominates at toy sizes (an FDEN step takes seconds to trace and tens to compile with XLA),
    # so the tiny run traces each kind of step once and leaves XLA and mixed precision to full runs.
    small = config_lib.smoke().replace(data={"glyphs_classes": 60, "glyphs_test_classes": 20,
                                             "glyphs_samples_per_class": 6},
                                       ali={"batch_size": 16}, fden={"episodes_per_batch": 4})
    return Sizes(main=small, paper=small.replace(fden={"episodes_per_batch": 16}), paper_classes=40,
                 windows=1, fden_window=2, naive_block=1, ali_window=2, bare_block=1,
                 variant_sizes=("paper sizes",), variants=("tf.function", "eager"), variant_rounds=1,
                 variant_block=1, paper_ali_rounds=1, paper_ali_block=1, fewshot_episodes=20,
                 fewshot_way=5, matmul_size=128, pipeline_batches=5)
  return Sizes(main=config_lib.cpu(), paper=config_lib.paper(), paper_classes=250, windows=5,
               fden_window=30, naive_block=5, ali_window=20, bare_block=10,
               variant_sizes=("CPU preset", "paper sizes"), variants=("tf.function", "eager", "xla", "mixed"),
               variant_rounds=3, variant_block=4, paper_ali_rounds=3, paper_ali_block=2,
               fewshot_episodes=1000, fewshot_way=20, matmul_size=2048,
               pipeline_batches=200)


# ------------------------------------------------------------------------------------------------------
# Timing.

def _median(values):
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _read(out):
  """What training_loop.run does with a step's result: every value to a Python float (a host sync)."""
  return {k: float(v) for k, v in out.items()}


def _error(e):
  return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"


class Blocks:
  """A baseline run in timed blocks of `steps` calls of `fn(i)` (call i), warmed up (traced) first."""

  def __init__(self, fn, steps, warmup=2):
    self.fn, self.steps, self.calls, self.seconds, self.last = fn, steps, 0, [], None
    for _ in range(warmup):
      self._call()

  def _call(self):
    self.last = self.fn(self.calls)
    self.calls += 1

  def __call__(self):
    t = time.perf_counter()
    for _ in range(self.steps):
      self._call()
    self.seconds.append((time.perf_counter() - t) / self.steps)

  @property
  def per_step(self):
    return _median(self.seconds)


class LoopTimer:
  """training_loop hooks that time the loop: the steps between two log lines, each log line (with its
  TensorBoard summaries) and each checkpoint (with its images). Wraps the real hooks.

  between: called after every checkpoint and left out of every timing: the baseline's blocks, run
  between the trainer's windows.
  """

  def __init__(self, inner=None, between=None):
    self.inner = inner or training_loop.NoHooks()
    self.between = between
    self.logs = []  # (step, enter, exit)
    self.checkpoints = {}  # step -> (save done, window restarts)

  def on_log(self, stage, step, metrics):
    enter = time.perf_counter()
    self.inner.on_log(stage, step, metrics)
    self.logs.append((step, enter, time.perf_counter()))

  def on_skip(self, stage, step, terms, skipped_total):
    self.inner.on_skip(stage, step, terms, skipped_total)

  def on_checkpoint(self, stage, step):
    self.inner.on_checkpoint(stage, step)
    saved = time.perf_counter()
    if self.between is not None:
      self.between()
    self.checkpoints[step] = (saved, time.perf_counter())

  def rates(self, log_every, checkpoint_every):
    """Seconds: {"step": median per step over the windows after the first, "log": a log line,
    "checkpoint": a checkpoint, "amortised": a step with its share of both at the given intervals,
    "windows": per step in each window}."""
    windows, logs, saves = [], [], []
    for (prev_step, _, prev_exit), (step, enter, exit_) in zip(self.logs, self.logs[1:]):
      start = self.checkpoints[prev_step][1] if prev_step in self.checkpoints else prev_exit
      windows.append((enter - start) / (step - prev_step))
      logs.append(exit_ - enter)
      if step in self.checkpoints:
        saves.append(self.checkpoints[step][0] - exit_)
    if not windows:
      raise ValueError("need at least two logging windows to time a trainer")
    step_s, log_s, save_s = _median(windows), _median(logs), _median(saves) if saves else 0.0
    return {"step": step_s, "log": log_s, "checkpoint": save_s,
            "amortised": step_s + log_s / log_every + save_s / checkpoint_every, "windows": windows}


# ------------------------------------------------------------------------------------------------------
# The trainers' compiled steps and inputs, wired as train_fden.train / train_ali.train wire them on one
# device, for timing a step on its own (eager, XLA, mixed precision) on batches made beforehand.

def fden_trainer_parts(model, optimizer, sampler, latents, fden_config, seed):
  """(compiled step(batch, poison), inputs(step) -> batch) of the project's FDEN trainer."""
  replica_inputs = train_fden.replica_inputs_fn(sampler, latents, fden_config.episodes_per_batch, seed)
  return (train_fden.make_train_step(model, optimizer, sampler, fden_config),
          tf.function(lambda step: replica_inputs(step, 0, 1), autograph=False))


def ali_trainer_parts(ali, d_optimizer, g_optimizer, images, ali_config, seed):
  """(compiled step(batch, poison), inputs(step) -> batch) of the project's ALI trainer."""
  replica_inputs = train_ali.replica_inputs_fn(images, ali_config, ali.latent_dim, seed)
  return (train_ali.make_train_step(ali, d_optimizer, g_optimizer, ali_config),
          tf.function(lambda step: replica_inputs(step, 0, 1), autograph=False))


def _batches(inputs, steps):
  return [inputs(tf.constant(i, tf.int64)) for i in range(steps)]


def _xla(step_fn):
  """A compiled step recompiled by XLA (its Python body is graph code already: no AutoGraph)."""
  return tf.function(tf.autograph.experimental.do_not_convert(step_fn.python_function), jit_compile=True)


def _fden_training(dim, fden_config, labels, like=None, mixed=False):
  """A fresh FDEN, its built optimizer and the episode sampler. like: values of another FDEN's variables
  (weights, batch-norm statistics, dropout seeds) to start from. mixed: built under the global mixed
  policy, with float32 outputs.

  (Not keras.utils.set_random_seed for equal weights: setting the global seed clears TensorFlow's kernel
  caches, and the next call of every compiled step then takes seconds to re-instantiate.)"""
  model = fden_lib.FDEN.from_config_section(dim, fden_config)
  if like is not None:
    for variable, value in zip(model.variables, like, strict=True):
      variable.assign(value)
  if mixed:
    float32_outputs(model)
  optimizer = train_fden.make_optimizer(fden_config)
  optimizer.build(model.trainable_variables)
  sampler = episodes_lib.EpisodeSampler(labels, *fden_config.training_episode)
  return model, optimizer, sampler


def _standardised(z):
  """Codes of a fresh encoder are tiny; standardised per dimension, FDEN's losses move from step one."""
  return ((z - z.mean(0)) / (z.std(0) + 1e-6)).astype(np.float32)


# ------------------------------------------------------------------------------------------------------
# Item 1: the trainer on the latent cache against the naive plug-in.

def paper_cache(s: Sizes, data) -> dict:
  """The paper-sized encoder (ALI SVHN, width 1.0, latent 256) and the latent cache of the training images
  of the first `s.paper_classes` classes: {"plugged", "images", "labels", "latents", "seconds"}."""
  keep = data.train.labels < s.paper_classes
  images, labels = data.train.images[keep], data.train.labels[keep]
  plugged = plugin.from_ali(train_ali.build_ali(s.paper.ali, images.shape[1:], images))
  t = time.perf_counter()
  latents = plugin.encode_all(plugged, images)
  return {"plugged": plugged, "images": images, "labels": labels, "latents": _standardised(latents),
          "seconds": time.perf_counter() - t}


def naive_fden_step(model, optimizer, sampler, images, encode, fden_config, seed):
  """The naive plug-in, `step_fn(step, poison)`: the trainer's own compiled step and episodes, but the
  episodes' images go through the frozen encoder at every step instead of their codes being read from
  the cache."""
  shape = tuple(images.shape[1:])
  # The trainer's inputs over flattened images instead of codes: the same episodes, as pixels.
  compiled, inputs = fden_trainer_parts(model, optimizer, sampler, images.reshape(len(images), -1),
                                        fden_config, seed)

  @tf.function(autograph=False)
  def step_fn(step, poison):
    batch = dict(inputs(step))
    batch["z"] = encode(tf.reshape(batch["z"], (-1,) + shape))  # what the cache saves
    return compiled(batch, poison)

  return step_fn


def measure_fden_vs_naive(s: Sizes, cache, tmp) -> dict:
  """Item 1: `train_fden.train` on the cache, with blocks of naive steps between its windows."""
  f = s.paper.fden
  images, labels, latents = cache["images"], cache["labels"], cache["latents"]
  model, optimizer, sampler = _fden_training(latents.shape[1], f, labels)
  naive_fn = naive_fden_step(model, optimizer, sampler, images, cache["plugged"].encode, f, s.paper.seed)
  poison = tf.constant(0.0)
  naive = Blocks(lambda i: _read(naive_fn(tf.constant(i, tf.int64), poison)), s.naive_block)

  matmul = MatmulRate(s.matmul_size)

  def between():
    naive()
    matmul()

  model = fden_lib.FDEN.from_config_section(latents.shape[1], f)
  timer = LoopTimer(between=between)
  window = s.fden_window
  train_fden.train(model, dataclasses.replace(f, steps=window * (s.windows + 1), checkpoint_every=window),
                   latents, labels, tmp, seed=s.paper.seed, show_progress=False, log_every=window, hooks=timer)
  trainer = timer.rates(log_every=s.paper.log_every, checkpoint_every=f.checkpoint_every)

  episodes = f.episodes_per_batch
  trainer_rate, naive_rate = episodes / trainer["amortised"], episodes / naive.per_step
  way, shot, query = f.training_episode
  return {"way": way, "shot": shot, "query": query, "episodes_per_step": episodes,
          "latent_dim": int(latents.shape[1]), "ali_width": s.paper.ali.width,
          "fden_hidden_scale": f.hidden_scale, "trainer_episodes_per_s": trainer_rate,
          "naive_episodes_per_s": naive_rate, "speedup": trainer_rate / naive_rate,
          "trainer_seconds": trainer, "naive_seconds_per_step": naive.per_step, "naive_blocks": naive.seconds,
          "matmul_flops_per_s": matmul.flops_per_s,
          "images_encoded_per_naive_step": episodes * way * (shot + query),
          "cache_seconds": cache["seconds"], "cache_images": int(len(images)),
          "cache_images_per_s": len(images) / cache["seconds"]}


# ------------------------------------------------------------------------------------------------------
# Item 2: one FDEN step, four ways.

def float32_outputs(model):
  """Keras's advice for mixed precision: the layers whose outputs reach a loss compute in float32 (the last
  dense layer of every FDEN block), so the trainer's float32 losses accept them."""
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if isinstance(layer, fden_lib.MLP):
      layer.denses[-1].dtype_policy = "float32"
  return model


def mixed_precision_support():
  """(policy, supported, why): bfloat16 runs natively on GPUs of compute capability 8.0+ and on CPUs with
  AVX512-BF16 or AMX; elsewhere TensorFlow emulates it."""
  for gpu in tf.config.list_physical_devices("GPU"):
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    if capability >= (8, 0):
      return "mixed_bfloat16", True, f"GPU compute capability {capability}"
  try:
    with open("/proc/cpuinfo") as f:
      cpu_flags = f.read()
  except OSError:
    cpu_flags = ""
  if "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags:
    return "mixed_bfloat16", True, "CPU with bfloat16 instructions"
  return "mixed_bfloat16", False, "no bfloat16 instructions on this CPU, no GPU: emulated"


def measure_fden_variants(fden_config, latents, labels, seed, label, s: Sizes) -> dict:
  """Item 2: the trainer's compiled FDEN step as it is (tf.function), eager, recompiled by XLA, and in
  mixed precision, each from the same weights on the same batches, timed in turns; the loss after the
  same steps tells whether a variant computes the same thing."""
  f = fden_config
  policy, supported, why = mixed_precision_support()
  steps, results = {}, {}
  batches = first = None
  for variant in [policy if v == "mixed" else v for v in s.variants]:
    previous = keras.mixed_precision.global_policy()
    try:
      if variant == policy:
        keras.mixed_precision.set_global_policy(policy)
      model, optimizer, sampler = _fden_training(latents.shape[1], f, labels, first, mixed=variant == policy)
      first = first or [v.numpy() for v in model.variables]
      step, inputs = fden_trainer_parts(model, optimizer, sampler, latents, f, seed)
      keras.mixed_precision.set_global_policy(previous)  # the policy only governs building the layers
      batches = batches or _batches(inputs, 2 + s.variant_rounds * s.variant_block)
      if variant == "tf.function":
        step_flops = flops.graph_flops(step, batches[0], tf.constant(0.0))
      step = {"eager": lambda st: st.python_function, "xla": _xla}.get(variant, lambda st: st)(step)
      poison = tf.constant(0.0)
      steps[variant] = Blocks(lambda i, step=step: _read(step(batches[i], poison)), s.variant_block)
    except Exception as e:  # pylint: disable=broad-except
      if variant == "tf.function":
        raise  # the trainer's own step must run
      results[variant] = {"error": _error(e)}
    finally:
      keras.mixed_precision.set_global_policy(previous)
  for _ in range(s.variant_rounds):
    for blocks in steps.values():
      blocks()
  base = steps["tf.function"]
  for variant, blocks in steps.items():
    results[variant] = {"seconds_per_step": blocks.per_step,
                        "episodes_per_s": f.episodes_per_batch / blocks.per_step,
                        "speed_vs_default": base.per_step / blocks.per_step, "loss_after": blocks.last["loss"],
                        "loss_difference": abs(blocks.last["loss"] - base.last["loss"])}
  if policy in results:
    results[policy].update(hardware=why, hardware_supported=supported)
  return {"label": label, "steps": 2 + s.variant_rounds * s.variant_block,
          "episodes_per_step": f.episodes_per_batch,
          "latent_dim": int(latents.shape[1]), "flops_per_step": step_flops, "variants": results}


# ------------------------------------------------------------------------------------------------------
# Item 3 (and item 4's ALI step): ALI.

def bare_ali_step(ali, d_optimizer, g_optimizer, reconstruction_weight):
  """ALI's update with nothing around it: a fixed batch, stateful noise, no finite-step guard, no
  distribution wrapper, no loop. `step(x) -> d_loss`."""
  enc, gen, disc = ali.encoder, ali.generator, ali.discriminator
  g_vars = enc.trainable_variables + gen.trainable_variables
  d_vars = disc.trainable_variables

  @tf.function(autograph=False)
  def step(x):
    eps = tf.random.normal([x.shape[0], ali.latent_dim])
    z_prior = tf.random.normal([x.shape[0], ali.latent_dim])
    with tf.GradientTape(persistent=True) as tape:
      z_hat = enc.sample(x, eps, training=True)
      x_tilde, x_rec = tf.split(gen(tf.concat([z_prior, z_hat], 0), training=True), 2)
      logits = disc(tf.concat([x, x_tilde], 0), tf.concat([z_hat, z_prior], 0), training=True)
      logit_real, logit_fake = tf.split(logits, 2)
      d_loss = losses.ali_discriminator_loss(logit_real, logit_fake)
      g_loss = (losses.ali_generator_loss(logit_real, logit_fake)
                + reconstruction_weight * losses.pixel_reconstruction_loss(x, x_rec))
    d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
    g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)
    return d_loss

  return step


def _ali(ali_config, images):
  """A fresh ALI and its two built optimizers."""
  ali = train_ali.build_ali(ali_config, images.shape[1:], images)
  d_opt, g_opt = train_ali.make_optimizer(ali_config), train_ali.make_optimizer(ali_config)
  d_opt.build(ali.discriminator.trainable_variables)
  g_opt.build(ali.encoder.trainable_variables + ali.generator.trainable_variables)
  return ali, d_opt, g_opt


def _ali_images(ali, test_images, seed):
  """What the main job draws at every ALI checkpoint (its TensorBoard samples and reconstructions)."""
  z = np.random.default_rng(seed).standard_normal((16, ali.latent_dim)).astype(np.float32)
  x = test_images[:8]
  return lambda: {"ali/samples": ali.decode(z).numpy(),
                  "ali/reconstructions": np.concatenate([x, ali.reconstruct(x).numpy()], axis=2)}


def measure_ali(s: Sizes, data, tmp) -> dict:
  """Item 3: `train_ali.train` as the main job runs it (TensorBoard summaries as hooks), with blocks of
  the bare step and of the trainer's compiled step alone between its windows."""
  cfg, c, images = s.main, s.main.ali, data.train.images
  poison = tf.constant(0.0)
  ali, d_opt, g_opt = _ali(c, images)
  bare_fn = bare_ali_step(ali, d_opt, g_opt, c.reconstruction_weight)
  x = tf.convert_to_tensor(images[:c.batch_size])
  bare = Blocks(lambda i: float(bare_fn(x)), s.bare_block)
  ali, d_opt, g_opt = _ali(c, images)
  step_fn, inputs = ali_trainer_parts(ali, d_opt, g_opt, images, c, cfg.seed)
  batches = _batches(inputs, 2 + (s.windows + 1) * s.bare_block)
  alone = Blocks(lambda i: _read(step_fn(batches[i % len(batches)], poison)), s.bare_block)
  matmul = MatmulRate(s.matmul_size)

  def between():
    bare()
    alone()
    matmul()

  ali, _, _ = _ali(c, images)
  window = s.ali_window
  with summaries_lib.RunSummaries(tmp) as summaries:
    summaries.image_hooks["ali"] = _ali_images(ali, data.test.images, cfg.seed)
    timer = LoopTimer(summaries, between)
    train_ali.train(ali, dataclasses.replace(c, steps=window * (s.windows + 1), checkpoint_every=window),
                    images, tmp, seed=cfg.seed, show_progress=False, log_every=window, hooks=timer)
  trainer = timer.rates(log_every=cfg.log_every, checkpoint_every=c.checkpoint_every)
  return {"batch_size": c.batch_size, "width": c.width, "latent_dim": c.latent_dim,
          "trainer_images_per_s": c.batch_size / trainer["amortised"],
          "bare_images_per_s": c.batch_size / bare.per_step,
          "overhead": trainer["amortised"] / bare.per_step - 1,
          "trainer_seconds": trainer, "bare_seconds_per_step": bare.per_step, "bare_blocks": bare.seconds,
          "step_alone_seconds_per_step": alone.per_step, "step_alone_blocks": alone.seconds,
          "step_alone_overhead": alone.per_step / bare.per_step - 1,
          # The bare step runs the trainer's products (its input pipeline has none) on a static batch.
          "flops_per_step": flops.graph_flops(bare_fn, x), "matmul_flops_per_s": matmul.flops_per_s,
          "intervals": {"log_every": cfg.log_every, "checkpoint_every": c.checkpoint_every}}


# ------------------------------------------------------------------------------------------------------
# Item 4: the ceiling.

class MatmulRate:
  """The ceiling: float32 FLOP/s of n x n matmuls (4 chained products a call), measured between a
  trainer's windows like the baselines, so that it sees the same load as the steps it is compared with."""

  def __init__(self, n):
    self.n, self.rates = n, []
    self.a = tf.random.stateless_normal([n, n], [1, 2])
    self.b = tf.random.stateless_normal([n, n], [3, 4])
    self.products(self.a, self.b).numpy()

  @tf.function
  def products(self, a, b):
    for _ in range(4):
      a = tf.matmul(a, b) * self.n ** -0.5  # keeps values near 1; n^2 multiplies beside 2 n^3 FLOPs
    return a

  def __call__(self):
    t = time.perf_counter()
    self.products(self.a, self.b).numpy()
    self.rates.append(4 * 2 * self.n ** 3 / (time.perf_counter() - t))

  @property
  def flops_per_s(self):
    return _median(self.rates)


def time_steps(steps, rounds, block, matmul_size):
  """{label: {"seconds": median s/step, "matmul": median matmul FLOP/s, "rounds": [(s/step, matmul FLOP/s)]}}
  for steps = {label: (step(batch, poison), batches)}, each warmed up (traced) first: every round runs a
  block of every step in turn, then two matmul timings, so that all of them see the same load."""
  poison = tf.constant(0.0)
  for step, batches in steps.values():
    for i in range(3):
      _read(step(batches[i % len(batches)], poison))
  matmul = MatmulRate(matmul_size)
  per_round = {label: [] for label in steps}
  for r in range(rounds):
    seconds = {}
    for label, (step, batches) in steps.items():
      t = time.perf_counter()
      for i in range(block):
        _read(step(batches[(r * block + i) % len(batches)], poison))
      seconds[label] = (time.perf_counter() - t) / block
    matmul()
    matmul()
    for label in steps:
      per_round[label].append((seconds[label], max(matmul.rates[-2:])))
  return {label: {"seconds": _median([s for s, _ in rs]), "matmul": _median([m for _, m in rs]), "rounds": rs}
          for label, rs in per_round.items()}


def measure_paper_ali_step(s: Sizes, images) -> dict:
  """Item 4 at the paper's ALI (`s.paper.ali`: the SVHN model at full width): the trainer's compiled step
  on batches made beforehand, in blocks taken in turns with matmul timings."""
  c = s.paper.ali
  ali, d_opt, g_opt = _ali(c, images)
  step, inputs = ali_trainer_parts(ali, d_opt, g_opt, images, c, s.paper.seed)
  batches = _batches(inputs, s.paper_ali_block + 2)
  t = time_steps({"ali": (step, batches)}, s.paper_ali_rounds, s.paper_ali_block, s.matmul_size)["ali"]
  return {"batch_size": c.batch_size, "width": c.width, "latent_dim": c.latent_dim,
          "flops_per_step": flops.graph_flops(step, batches[0], tf.constant(0.0)),
          "seconds_per_step": t["seconds"], "blocks": [seconds for seconds, _ in t["rounds"]],
          "matmul_flops_per_s": t["matmul"]}


def measure_ceiling(s: Sizes, results, cache, images) -> dict:
  """Item 4: the FLOP rate of the trainers' steps timed in items 1 and 3, and of the ALI step at the
  paper's sizes, each against the matmul rate measured in the same period."""
  ceiling = {"size": s.matmul_size, "flops_per_s": {}}
  steps = {}
  if "ali" in results:
    a = results["ali"]
    steps["ali"] = (a["flops_per_step"], a["trainer_seconds"]["amortised"], a["matmul_flops_per_s"],
                    f"trainer, CPU preset: width {a['width']:g}, batch {a['batch_size']}")
    p = measure_paper_ali_step(s, images)
    steps["ali_paper"] = (p["flops_per_step"], p["seconds_per_step"], p["matmul_flops_per_s"],
                          f"trainer's compiled step, paper sizes: width {p['width']:g}, "
                          f"batch {p['batch_size']}")
  if "fden" in results:
    f = results["fden"]
    counted = [v["flops_per_step"] for v in results.get("variants", []) if v["label"] == "paper sizes"]
    if not counted:
      model, optimizer, sampler = _fden_training(cache["latents"].shape[1], s.paper.fden, cache["labels"])
      step, inputs = fden_trainer_parts(model, optimizer, sampler, cache["latents"], s.paper.fden, s.paper.seed)
      counted = [flops.graph_flops(step, inputs(tf.constant(0, tf.int64)), tf.constant(0.0))]
    steps["fden"] = (counted[0], f["trainer_seconds"]["amortised"], f["matmul_flops_per_s"],
                     "trainer, paper sizes")
  for name, (step_flops, seconds, matmul, label) in steps.items():
    ceiling["flops_per_s"][name] = matmul
    ceiling[name] = {"label": label, "flops_per_step": step_flops, "seconds_per_step": seconds,
                     "flops_per_s": step_flops / seconds, "fraction": step_flops / seconds / matmul}
  return ceiling


# ------------------------------------------------------------------------------------------------------
# Item 5: few-shot evaluation.

def fewshot_loop(embeddings, sampler, num_episodes, seed) -> float:
  """The per-episode Python loop that vectorised evaluation replaces: the same sampler and prototype
  maths, one episode a call. Returns the mean accuracy."""
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  labels = sampler.query_labels(1)
  total = 0.0
  for e in range(num_episodes):
    indices = sampler.sample(tf.constant([seed, e], tf.int64), 1)
    support, query = episodes_lib.split_episode(tf.gather(embeddings, indices), sampler.shot)
    predicted = tf.argmax(losses.prototype_logits(support, query), -1, output_type=tf.int32)
    total += float(tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32)))
  return total / num_episodes


def measure_fewshot(s: Sizes, data) -> dict:
  """Item 5 on cached latents: the CPU preset's encoder over the unseen test classes."""
  cfg = s.main
  ali = train_ali.build_ali(cfg.ali, data.test.image_shape, data.train.images)
  latents = plugin.encode_all(plugin.from_ali(ali), data.test.images)
  sampler = episodes_lib.EpisodeSampler(data.test.labels, s.fewshot_way, 1, cfg.fden.query, "the test split")
  times = []
  for _ in range(4):  # the first call includes one-off kernel set-up
    t = time.perf_counter()
    result = fewshot.evaluate(latents, sampler, s.fewshot_episodes, seed=0)
    times.append(time.perf_counter() - t)
  fewshot_loop(latents, sampler, 2, seed=1)
  t = time.perf_counter()
  loop_accuracy = fewshot_loop(latents, sampler, s.fewshot_episodes, seed=1)
  loop_s = time.perf_counter() - t
  return {"episodes": s.fewshot_episodes, "way": s.fewshot_way, "shot": 1, "query": cfg.fden.query,
          "latent_dim": int(latents.shape[1]), "test_samples": int(len(latents)),
          "vectorised_seconds": _median(times[1:]), "vectorised_first_call_seconds": times[0],
          "loop_seconds": loop_s, "speedup": loop_s / _median(times[1:]),
          "vectorised_accuracy": result["accuracy"], "vectorised_ci95": result["ci95"],
          "loop_accuracy": loop_accuracy}


# ------------------------------------------------------------------------------------------------------
# Item 6: input pipelines alone.

def measure_pipeline(s: Sizes, data) -> dict:
  """Images/s of input pipelines, no training: the ALI trainer's own (`distribute.StepInputs` over
  `train_ali.replica_inputs_fn`: tf.data over the step's slice of the epoch permutation, its images and
  noise), the same batches from a plain tf.function, and a textbook tf.data pipeline (shuffle, batch,
  prefetch) from the same in-memory arrays."""
  c, steps = s.main.ali, s.pipeline_batches
  replica_inputs = train_ali.replica_inputs_fn(data.train.images, c, c.latent_dim, s.main.seed)

  def images_per_s(next_batch):
    next_batch(0)["x"].numpy()
    t = time.perf_counter()
    for i in range(1, steps + 1):
      next_batch(i)["x"].numpy()
    return steps * c.batch_size / (time.perf_counter() - t)

  trainer_inputs = distribute.StepInputs(tf.distribute.get_strategy(), replica_inputs, steps + 1)
  in_graph = tf.function(lambda step: replica_inputs(step, 0, 1), autograph=False)
  dataset = (tf.data.Dataset.from_tensor_slices(data.train.images)
             .shuffle(len(data.train.images), seed=s.main.seed).batch(c.batch_size, drop_remainder=True)
             .repeat().map(lambda x: {"x": x}).prefetch(tf.data.AUTOTUNE))
  iterator = iter(dataset)
  return {"batch_size": c.batch_size, "batches": steps,
          "trainer_images_per_s": images_per_s(trainer_inputs),
          "in_graph_images_per_s": images_per_s(lambda i: in_graph(tf.constant(i, tf.int64))),
          "tf_data_images_per_s": images_per_s(lambda i: next(iterator))}


# ------------------------------------------------------------------------------------------------------
# Item 7: memory.

# Runs argv[2:] and writes its peak resident memory (kilobytes) to argv[1]. A process started from a large
# one inherits that one's peak: Linux carries the high-water mark of the memory it replaces at exec into
# the child's ru_maxrss. So the command is started from this small launcher, never from the benchmark.
_LAUNCHER = """
import resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
  f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(status)
"""


def peak_rss_of_command(command, tmp):
  """Runs `command` (a list, or a string split as a shell would) as a child; returns (exit status, peak
  resident memory in bytes, seconds). The peak is that of the command's largest process (of it and the
  processes it waited for, not their sum)."""
  if isinstance(command, str):
    command = shlex.split(command.replace("{tmp}", tempfile.mkdtemp(dir=tmp)))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
  log_path = os.path.join(tmp, f"memory_{time.time_ns()}.log")
  peak_path = log_path + ".peak"
  t = time.perf_counter()
  with open(log_path, "w") as log:
    status = subprocess.call([sys.executable, "-c", _LAUNCHER, peak_path] + list(command), cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - t
  if status:
    with open(log_path) as f:
      print(f"memory command exited {status}: {' '.join(command)}\n{f.read()[-2000:]}", file=sys.stderr)
  with open(peak_path) as f:
    return status, int(f.read()) * 1024, seconds  # Linux counts kilobytes


def _own_peak_bytes():
  """This process's peak resident memory since it started its program (VmHWM; ru_maxrss would include
  the peak of whatever process started it, see _LAUNCHER)."""
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def default_main_job(tmp):
  return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), f"--output_dir={tmp}/main_job",
          "--noprogress"]


def measure_memory(commands, tmp) -> dict:
  """Item 7: this process's peak, and each (label, command)'s; targets: main job 4 GB, Omniglot 8 GB."""
  result = {"this_process_bytes": _own_peak_bytes(), "commands": []}
  for label, command in commands:
    status, peak, seconds = peak_rss_of_command(command, tmp)
    target = 4 * GB if label == "main job" else (8 * GB if "omniglot" in label.lower() else None)
    result["commands"].append({"label": label, "command": command if isinstance(command, str) else
                               " ".join(command), "exit_status": status, "peak_bytes": peak,
                               "seconds": seconds, "target_bytes": target})
  return result


# ------------------------------------------------------------------------------------------------------
# The run and its table.

def machine() -> dict:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
  except OSError:
    pass
  gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
          for g in tf.config.list_physical_devices("GPU")]
  return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "gpus": gpus, "tensorflow": tf.__version__,
          "keras": keras.__version__, "python": platform.python_version(),
          "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


def run(tiny=False, sections=SECTIONS, memory_commands=()) -> dict:
  """Every measurement in `sections`, then the memory of `memory_commands` [(label, command)]. Returns
  the results (JSON-ready) with "table", the markdown table, and the seconds each section took."""
  s = sizes(tiny)
  keras.utils.set_random_seed(s.main.seed)  # once: see _fden_training
  results = {"machine": machine(), "tiny": tiny, "load_average_before": os.getloadavg()[0],
             "section_seconds": {}}
  start = last = time.perf_counter()

  def lap(name):
    nonlocal last
    results["section_seconds"][name], last = time.perf_counter() - last, time.perf_counter()

  data = datasets.load(s.main.data)
  lap("data")
  with tempfile.TemporaryDirectory() as tmp:
    cache = None
    if {"fden", "variants"} & set(sections):
      cache = paper_cache(s, data)
      lap("latent cache")
    if "fden" in sections:
      results["fden"] = measure_fden_vs_naive(s, cache, os.path.join(tmp, "fden"))
      lap("fden")
    if "variants" in sections:
      results["variants"] = []
      for label in s.variant_sizes:
        cfg, latents = s.paper, cache["latents"]
        if label == "CPU preset":  # the CPU preset's encoder over the same images
          cfg = s.main
          ali = train_ali.build_ali(cfg.ali, cache["images"].shape[1:], cache["images"])
          latents = _standardised(plugin.encode_all(plugin.from_ali(ali), cache["images"]))
        results["variants"].append(
            measure_fden_variants(cfg.fden, latents, cache["labels"], cfg.seed, label, s))
      lap("variants")
    if "ali" in sections:
      results["ali"] = measure_ali(s, data, os.path.join(tmp, "ali"))
      lap("ali")
    if "ali" in results or "fden" in results:
      results["ceiling"] = measure_ceiling(s, results, cache, data.train.images)
      lap("ceiling")
    if "fewshot" in sections:
      results["fewshot"] = measure_fewshot(s, data)
      lap("fewshot")
    if "pipeline" in sections:
      results["pipeline"] = measure_pipeline(s, data)
      lap("pipeline")
    results["memory"] = measure_memory(memory_commands, tmp)
    lap("memory")
  results["load_average_after"] = os.getloadavg()[0]
  results["seconds"] = time.perf_counter() - start
  results["table"] = table(results)
  return results


def _verdict(ok):
  return "met" if ok else "**missed**"


def _fmt(x):
  return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def table(r) -> str:
  """The results as the markdown table the README shows."""
  rows = ["| # | measurement | project | baseline | ratio | target | |", "|---|---|---|---|---|---|---|"]

  def add(item, what, value, baseline="", ratio="", target="", verdict=""):
    rows.append(f"| {item} | {what} | {value} | {baseline} | {ratio} | {target} | {verdict} |")

  if "fden" in r:
    f = r["fden"]
    add(1, f"FDEN training, episodes/s: {f['way']}-way {f['shot']}-shot {f['query']} query, "
        f"{f['episodes_per_step']} episodes a step, Dim {f['latent_dim']} (paper sizes)",
        f"{_fmt(f['trainer_episodes_per_s'])} (trainer, latent cache)",
        f"{_fmt(f['naive_episodes_per_s'])} (naive: encodes {f['images_encoded_per_naive_step']} images "
        "a step)",
        f"{f['speedup']:.1f}×", "≥ 20×", _verdict(f["speedup"] >= 20))
    add(1, f"…the cache's one-off cost: images/s through the encoder (ALI width {f['ali_width']:g})",
        _fmt(f["cache_images_per_s"]))
  for v in r.get("variants", []):
    for name, x in v["variants"].items():
      what = f"FDEN step {name}, {v['label']} ({v['episodes_per_step']} episodes, Dim {v['latent_dim']})"
      if "error" in x:
        add(2, what, "failed", verdict=x["error"])
        continue
      note = "**trainer's default**" if name == "tf.function" else (
          "" if x.get("hardware_supported", True) else "no bf16 hardware: emulated")
      add(2, what + f": ms/step; loss after {v['steps']} steps", f"{1000 * x['seconds_per_step']:.1f}; "
          f"{x['loss_after']:.6g}", "tf.function", f"{x['speed_vs_default']:.2f}× speed; Δloss "
          f"{x['loss_difference']:.1g}", "default = fastest with the same result", note)
  if "ali" in r:
    a = r["ali"]
    t = a["trainer_seconds"]
    add(3, f"ALI training, images/s: batch {a['batch_size']}, width {a['width']:g}, latent {a['latent_dim']} "
        f"(trainer: loop, input pipeline, finite-step guard, logs every {a['intervals']['log_every']}, "
        f"checkpoints every {a['intervals']['checkpoint_every']})", _fmt(a["trainer_images_per_s"]),
        f"{_fmt(a['bare_images_per_s'])} (bare GradientTape step)", f"{100 * a['overhead']:+.1f}% time",
        "< 10% overhead", _verdict(a["overhead"] < 0.10))
    add(3, "…ms: trainer per step / one log line / one checkpoint with its images; the trainer's compiled "
        "step alone (distribution wrapper, finite-step guard; batches made beforehand)",
        f"{1000 * t['step']:.0f} / {1000 * t['log']:.0f} / {1000 * t['checkpoint']:.0f}; "
        f"{1000 * a['step_alone_seconds_per_step']:.0f}", f"{1000 * a['bare_seconds_per_step']:.0f} (bare)",
        f"step alone {100 * a['step_alone_overhead']:+.1f}%")
  if "ceiling" in r:
    c = r["ceiling"]
    for name, target in (("ali", 0.5), ("ali_paper", 0.5), ("fden", None)):
      if name in c:
        x = c[name]
        add(4, f"{name.split('_')[0].upper()} step ({x['label']}): {x['flops_per_step'] / 1e9:.3g} GFLOP in "
            f"{1000 * x['seconds_per_step']:.0f} ms, GFLOP/s", f"{x['flops_per_s'] / 1e9:.1f}",
            f"{c['flops_per_s'][name] / 1e9:.1f} (float32 matmul {c['size']}², same period)",
            f"{100 * x['fraction']:.0f}%", "≥ 50%" if target else "",
            _verdict(x["fraction"] >= target) if target else "")
  if "fewshot" in r:
    f = r["fewshot"]
    add(5, f"few-shot evaluation of {f['episodes']:,} episodes, {f['way']}-way {f['shot']}-shot, cached "
        "latents, s",
        f"{f['vectorised_seconds']:.3f} (vectorised)", f"{f['loop_seconds']:.2f} (per-episode loop)",
        f"{f['speedup']:.0f}×", "< 5 s", _verdict(f["vectorised_seconds"] < 5))
  if "pipeline" in r:
    p = r["pipeline"]
    consumed = r.get("ali", {}).get("trainer_images_per_s")
    for name, key in (("the ALI trainer's (distribute.StepInputs)", "trainer_images_per_s"),
                      ("the same batches from a plain tf.function", "in_graph_images_per_s"),
                      ("textbook tf.data shuffle/batch/prefetch", "tf_data_images_per_s")):
      ratio = p[key] / consumed if consumed else None
      add(6, f"input pipeline alone, images/s: {name}", _fmt(p[key]),
          f"{_fmt(consumed)} (ALI training consumes)" if consumed else "", f"{ratio:.0f}×" if ratio else "",
          "≥ 3×", _verdict(ratio >= 3) if ratio else "")
  m = r["memory"]
  add(7, "peak resident memory of this benchmark process (no target)", f"{m['this_process_bytes'] / GB:.2f} GB")
  for c in m["commands"]:
    target = c["target_bytes"]
    ok = c["exit_status"] == 0 and (target is None or c["peak_bytes"] < target)
    add(7, f"peak resident memory, {c['label']}: `{c['command']}`", f"{c['peak_bytes'] / GB:.2f} GB",
        target=f"< {target / GB:.0f} GB" if target else "",
        verdict=(_verdict(ok) if target else "") + (f" (exit {c['exit_status']})" if c["exit_status"] else ""))
  return "\n".join(rows)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    print(f"error: unknown --sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
    sys.exit(2)
  with tempfile.TemporaryDirectory() as tmp:
    commands = [("main job", default_main_job(tmp))] if FLAGS.memory else []
    commands += [("Omniglot benchmark" if "omniglot" in c else f"command {i + 1}", c)
                 for i, c in enumerate(FLAGS.memory_command)]
    results = run(FLAGS.tiny, tuple(FLAGS.sections), commands)
  results["command"] = " ".join(["python", "benchmarks/throughput.py"] + sys.argv[1:])
  m = results["machine"]
  print(f"\n`{results['command']}`: {m['cores']} cores of {m['cpu']}, "
        f"{'GPUs ' + ', '.join(m['gpus']) if m['gpus'] else 'no GPU'}, TensorFlow {m['tensorflow']} "
        f"(TF_ENABLE_ONEDNN_OPTS={m['TF_ENABLE_ONEDNN_OPTS']}); "
        f"{results['seconds']:.0f} s; load average {results['load_average_before']:.1f} before, "
        f"{results['load_average_after']:.1f} after (above {m['cores']}: the machine was shared)\n")
  print(results["table"])
  print("\nseconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in results["section_seconds"].items()))
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
