"""The loop both trainers share: resume, checkpoints, logs, progress and the divergence guard.

A trainer hands over a compiled step, `step_fn(step, poison) -> dict of scalar tensors`, whose result holds
`finite` (False when a loss or gradient was non-finite, in which case the step applied nothing) and its loss
terms. Everything random in a step derives from (seed, step), so a resumed run replays exactly the steps an
uninterrupted one would have taken.

Under a multi-worker strategy only the chief writes to the stage's directory; the other workers restore
from the chief's checkpoints (so a resumed cluster needs a directory every host sees) and save their own
copies to a scratch directory that is removed at the end, as TensorFlow's multi-worker guide does.

Damage: the newest checkpoint that restores is resumed from (checkpoints.restore_newest), a torn last line of
train_log.jsonl (a kill mid-write) is dropped, and a checkpoint that cannot be written (a full disk) stops the
run with `CheckpointWriteError` naming the folder; the run resumes once there is room.

Divergence guard: a non-finite step is skipped and counted; after `max_nonfinite` consecutive ones the loop
restores the newest checkpoint (every saved one is finite, since bad steps never reach the weights) and
continues at `recovery_lr_factor` times the learning rate; a second such failure stops the run with
`DivergenceError` naming the step range and the terms that went non-finite.
"""

import dataclasses
import json
import math
import os
import time

import tensorflow as tf
from absl import logging

from fden_tf import checkpoints
from fden_tf import distribute
from fden_tf import files
from fden_tf import progress as progress_lib


class DivergenceError(RuntimeError):
  """Training kept producing non-finite losses or gradients after a restore."""


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (e.g. the disk is full); the run can resume once it can be."""


@dataclasses.dataclass(frozen=True)
class Guard:
  """The divergence guard's settings: restore after `max_nonfinite` non-finite steps in a row, continuing
  at `recovery_lr_factor` times the learning rate."""
  max_nonfinite: int = 10
  recovery_lr_factor: float = 0.5


@dataclasses.dataclass
class Stage:
  """What the loop needs to know about one training stage."""
  name: str  # "ALI" or "FDEN", for messages
  workdir: str
  steps: int
  checkpoint_every: int
  objects: dict  # models and optimizers to checkpoint, by name
  optimizers: list
  log_every: int = 100
  guard: Guard = Guard()
  strategy: object = None  # the tf.distribute.Strategy the stage trains under (None: one device)


def _learning_rates(stage) -> dict:
  """The rate each optimizer of the stage holds now: "learning_rate" for the first (the stage's own), and
  "<name>_learning_rate" for any other, by its name among the checkpointed objects (FDEN's
  "refit_optimizer" for the Entangler refit), so a later phase's rate is not read off the first's."""
  names = {id(obj): name for name, obj in stage.objects.items()}
  rates = {"learning_rate": float(stage.optimizers[0].learning_rate.numpy())}
  for optimizer in stage.optimizers[1:]:
    rates[f"{names[id(optimizer)]}_learning_rate"] = float(optimizer.learning_rate.numpy())
  return rates


def _parse_log(path):
  """(records, unreadable line numbers) of a train_log.jsonl. A line that is not a JSON object is a torn
  write (the process was killed mid-line), normally only the last one."""
  records, torn = [], []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError:
        record = None
      if isinstance(record, dict):
        records.append(record)
      else:
        torn.append(number)
  return records, torn


def _truncate_log(path, last_step):
  """Drops log lines past the restored step, so a resumed run's log reads as one uninterrupted run, and any
  torn line (with a log line saying so). Rewritten atomically: a kill now cannot lose the log."""
  if not os.path.exists(path):
    return
  records, torn = _parse_log(path)
  if torn:
    logging.warning("%s: dropped %d torn line(s) (line %s; a kill mid-write)", path, len(torn),
                    ", ".join(map(str, torn)))
  kept = [r for r in records if r.get("step", 0) <= last_step]
  files.atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept))


def _nonfinite_terms(out):
  return sorted(k for k, v in out.items() if k != "finite" and not math.isfinite(float(v)))


class NoHooks:
  """What `run` calls as it goes (summaries.RunSummaries implements these)."""

  def on_log(self, stage_name, step, metrics):
    pass

  def on_skip(self, stage_name, step, terms, skipped_total):
    pass

  def on_checkpoint(self, stage_name, step):
    pass


def run(stage: Stage, step_fn, show_progress=True, nonfinite_steps=(), hooks=None) -> dict:
  """Runs `stage` to `stage.steps`, resuming from its newest checkpoint. Returns the last window's means
  plus `skipped_steps` and `recoveries`; `hooks` (see NoHooks) hear of logs, skips and checkpoints.

  nonfinite_steps: fault injection for tests; each listed step gets a NaN added to its loss the first
  time it runs.
  """
  strategy = stage.strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  with distribute.ScratchDir(chief, stage.workdir, stage.name) as write_dir:
    return _run(stage, step_fn, show_progress, nonfinite_steps, hooks if chief else None, strategy,
                write_dir)


def _run(stage, step_fn, show_progress, nonfinite_steps, hooks, strategy, write_dir):
  """`run`, writing checkpoints and the log under `write_dir` (the stage's directory on the chief) and
  restoring from the stage's own `checkpoints/`."""
  os.makedirs(write_dir, exist_ok=True)
  restore_dir = os.path.join(stage.workdir, "checkpoints")
  step_var = tf.Variable(0, dtype=tf.int64, name="step")
  skipped_var = tf.Variable(0, dtype=tf.int64, name="skipped_steps")
  recoveries_var = tf.Variable(0, dtype=tf.int64, name="recoveries")
  ckpt = checkpoints.checkpoint(step=step_var, skipped=skipped_var, recoveries=recoveries_var,
                                **stage.objects)
  # Restored before the manager reads the state file, which restore_newest repairs when it is damaged.
  latest = checkpoints.restore_newest(ckpt, restore_dir, stage.name, repair=write_dir == stage.workdir)
  manager = tf.train.CheckpointManager(ckpt, os.path.join(write_dir, "checkpoints"), max_to_keep=3)
  if not latest:
    _save(manager, 0, stage.name)  # a known-good state to fall back to
  start = int(step_var.numpy())
  distribute.check_workers_agree(strategy, start, f"the {stage.name} step to resume from")
  log_path = os.path.join(write_dir, "train_log.jsonl")
  _truncate_log(log_path, start)
  if start >= stage.steps:  # finished earlier: never redone
    return dict(_last_logged(log_path), resumed=True)

  hooks = hooks or NoHooks()
  pending_poison = set(nonfinite_steps)
  bar = progress_lib.Progress(stage.steps, f"{stage.name} training", enabled=show_progress, unit="step",
                              initial=start)
  window, metrics, bad_run = [], {}, []
  t0 = window_start = time.time()
  step = start
  while step < stage.steps:
    poison = math.nan if step in pending_poison else 0.0
    pending_poison.discard(step)
    out = {k: float(v) for k, v in step_fn(tf.constant(step, tf.int64), tf.constant(poison)).items()}
    if not out.pop("finite"):
      skipped_var.assign_add(1)
      bad_run.append((step, _nonfinite_terms(out)))
      _append_log(log_path, {"event": "nonfinite_step_skipped", "step": step + 1,
                             "terms": bad_run[-1][1]})
      hooks.on_skip(stage.name, step + 1, bad_run[-1][1], int(skipped_var.numpy()))
      if len(bad_run) >= stage.guard.max_nonfinite:
        step = _recover(stage, ckpt, restore_dir, log_path, bad_run)
        bad_run = []
        bar.count = step
        continue
    else:
      bad_run = []
      window.append(out)
    step += 1
    step_var.assign(step)
    bar.update(1)
    if step % stage.log_every == 0 or step == stage.steps:
      metrics = _summarise(window, step, time.time() - t0, int(skipped_var.numpy()))
      metrics["steps_per_second"] = len(window) / max(time.time() - window_start, 1e-9)
      metrics.update(_learning_rates(stage))
      window, window_start = [], time.time()
      _append_log(log_path, metrics)
      hooks.on_log(stage.name, step, metrics)
      bar.postfix = " ".join(f"{k}={v:.3f}" for k, v in list(metrics.items())[:4])
    if step % stage.checkpoint_every == 0 or step == stage.steps:
      _save(manager, step, stage.name)
      hooks.on_checkpoint(stage.name, step)
  bar.close()
  metrics.update(skipped_steps=int(skipped_var.numpy()), recoveries=int(recoveries_var.numpy()))
  return metrics


def _save(manager, step, what):
  """manager.save, a failure (a full disk, a vanished folder) turned into one line naming the folder."""
  try:
    manager.save(checkpoint_number=step)
  except (tf.errors.OpError, OSError) as e:
    reason = (e.message if isinstance(e, tf.errors.OpError) else e.strerror or str(e)).strip().splitlines()[0]
    raise CheckpointWriteError(f"cannot write the {what} checkpoint of step {step} under {manager.directory} "
                               f"({reason}); free disk space (or fix the folder) and re-run the same command "
                               "to resume") from None


def _summarise(window, step, seconds, skipped):
  """Each term's mean over the window's steps that report it (a stage's phases report different terms)."""
  keys = dict.fromkeys(k for w in window for k in w)  # first-seen order
  metrics = {k: sum(values) / len(values) for k in keys for values in [[w[k] for w in window if k in w]]}
  metrics.update(step=step, seconds=seconds, skipped_steps=skipped)
  return metrics


def read_log(path):
  """A stage's train_log.jsonl as a list of records (metrics lines and event lines); [] if absent. A torn
  line (a kill mid-write) is left out."""
  if not os.path.exists(path):
    return []
  return _parse_log(path)[0]


def _last_logged(path):
  """The last metrics line of a stage's log (skipping event lines)."""
  metrics = [record for record in read_log(path) if "event" not in record]
  return metrics[-1] if metrics else {}


def _append_log(path, record):
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def _recover(stage, ckpt, restore_dir, log_path, bad_run):
  """Restores the newest checkpoint at a reduced learning rate, or gives up on a second failure.

  The skip and recovery counts survive the restore (they describe the run, not the checkpoint)."""
  first, last = bad_run[0][0] + 1, bad_run[-1][0] + 1
  terms = sorted({t for _, ts in bad_run for t in ts}) or ["gradients"]
  if int(ckpt.recoveries.numpy()) >= 1:
    raise DivergenceError(
        f"{stage.name} training diverged again: {', '.join(terms)} non-finite at steps {first}-{last} "
        f"({len(bad_run)} in a row) after a restore at reduced learning rate; lower the learning rate or "
        "check the data")
  skipped = int(ckpt.skipped.numpy())
  checkpoints.restore_newest(ckpt, restore_dir, stage.name)
  ckpt.skipped.assign(skipped)
  ckpt.recoveries.assign_add(1)
  for optimizer in stage.optimizers:
    optimizer.learning_rate = float(optimizer.learning_rate.numpy()) * stage.guard.recovery_lr_factor
  restored = int(ckpt.step.numpy())
  _append_log(log_path, {"event": "restored_after_divergence", "step": restored, "bad_steps": [first, last],
                         "terms": terms, "learning_rate_factor": stage.guard.recovery_lr_factor})
  return restored
