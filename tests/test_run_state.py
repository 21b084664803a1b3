"""The output directory as a record (issue 17): its lock, --overwrite, the plugged network's identity, damaged
checkpoints and logs, a full disk, and file modes. Unit tests on the functions, each a second or so: no
training (the training loop runs a step function that only counts)."""

import hashlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from fden_tf import checkpoints
from fden_tf import config as config_lib
from fden_tf import files
from fden_tf import preflight
from fden_tf import run_state
from fden_tf import training_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------
# The lock (item 8).


def _hold_lock(out):
  """A child process that takes `out`'s lock and waits; returns it once it holds the lock."""
  code = (f"import sys, time; sys.path.insert(0, {ROOT!r}); from fden_tf import run_state\n"
          f"with run_state.claim({str(out)!r}):\n  print('held', flush=True); time.sleep(120)")
  child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == "held"
  return child


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path,
                                                                                              caplog):
  out = tmp_path / "run"
  child = _hold_lock(out)
  try:
    assert run_state.lock_holder(str(out)) == child.pid
    with pytest.raises(run_state.OutputDirLocked, match=f"in use by process {child.pid} "):
      with run_state.claim(str(out)):
        pass
    # scripts/train.py's preflight says the same, before TensorFlow, writing nothing.
    with pytest.raises(ValueError, match=f"in use by process {child.pid}"):
      preflight.check_output_dir(str(out), config_lib.smoke(), overwrite=False)
    # A cluster's other workers train beside the chief that holds the lock (they write nothing there).
    preflight.check_output_dir(str(out), config_lib.smoke(), overwrite=False, writer=False)
  finally:
    child.kill()  # SIGKILL: no cleanup runs, the lock file stays with the dead pid in it
    child.wait()
  assert (out / run_state.LOCK_FILE).read_text().strip() == str(child.pid)
  assert run_state.lock_holder(str(out)) is None
  logged = []
  # Recorded at the call, not through a log handler (absl's handler, once set up by another test, stops
  # records from reaching pytest's caplog).
  with mock.patch.object(run_state.logging, "info", lambda message, *args: logged.append(message % args)), \
      run_state.claim(str(out)):
    assert (out / run_state.LOCK_FILE).read_text().strip() == str(os.getpid())
  assert any(f"from process {child.pid}, which no longer holds it" in line for line in logged)
  with run_state.claim(str(out)):  # released at the end of the block: the same process claims it again
    pass


# ---------------------------------------------------------------------------------------------------------
# --overwrite (item 2).


def _old_run(out):
  (out / "fden" / "checkpoints").mkdir(parents=True)
  (out / "config.json").write_text(json.dumps({"seed": 0}))
  (out / "fden" / "checkpoints" / "ckpt-300.index").write_bytes(b"seed 0's FDEN")
  return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_overwrite_moves_the_earlier_run_aside_in_one_rename_and_starts_on_an_empty_folder(tmp_path, caplog):
  out = tmp_path / "run"
  before = _old_run(out)
  with caplog.at_level(logging.WARNING), run_state.claim(str(out), overwrite=True) as aside:
    assert os.listdir(out) == [run_state.LOCK_FILE]  # nothing of the old run left to resume from
    assert run_state.lock_holder(str(out)) == os.getpid()
  assert os.path.basename(aside).startswith("run.old-") and os.path.dirname(aside) == str(tmp_path)
  moved = {p.relative_to(aside): p.read_bytes() for p in pathlib.Path(aside).rglob("*")
           if p.is_file()}
  assert moved == before  # every file kept, byte for byte; no lock file carried along
  assert f"moved the earlier run in {out} aside to {aside}" in caplog.text
  # Without a run in it, --overwrite moves nothing.
  with run_state.claim(str(out), overwrite=True) as aside_again:
    assert aside_again is None


def test_overwrite_that_cannot_rename_leaves_the_old_run_whole(tmp_path, monkeypatch):
  out = tmp_path / "run"
  before = _old_run(out)

  def refuse(src, dst):
    raise OSError(18, "Invalid cross-device link")

  monkeypatch.setattr(run_state.os, "rename", refuse)
  with pytest.raises(ValueError, match="--overwrite cannot move .* aside"):
    with run_state.claim(str(out), overwrite=True):
      pytest.fail("the block must not run")
  assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()
          and p.name != run_state.LOCK_FILE} == before


def test_overwrite_refuses_to_move_aside_the_ali_dir_it_plugs(tmp_path):
  with pytest.raises(ValueError, match="holds the --ali_dir"):
    run_state.check_overwrite(str(tmp_path / "run"), str(tmp_path / "run" / "."))
  run_state.check_overwrite(str(tmp_path / "run"), str(tmp_path / "run-ali"))  # a sibling is fine


# ---------------------------------------------------------------------------------------------------------
# The plugged network's identity (item 1).


def _write_run(out, record, config=None):
  out.mkdir(parents=True, exist_ok=True)
  files.write_json(str(out / "config.json"), dict((config or config_lib.smoke()).to_dict(), plugged=record))


def test_a_run_on_another_encoder_of_the_same_shape_is_refused(tmp_path):
  encoder, decoder = tmp_path / "enc.keras", tmp_path / "dec.keras"
  encoder.write_bytes(b"encoder weights A")
  decoder.write_bytes(b"decoder weights")
  out = tmp_path / "run"
  first = run_state.plugged_record(str(out), plugged=(str(encoder), str(decoder)))
  expected = hashlib.sha256(b"encoder weights A").hexdigest()  # what `sha256sum enc.keras` prints
  assert first["encoder"] == {"path": str(encoder), "sha256": expected}
  _write_run(out, first)
  preflight.check_output_dir(str(out), config_lib.smoke(), False, first)  # the same network: resumes

  moved = tmp_path / "elsewhere.keras"  # the same weights at another path are the same network
  moved.write_bytes(b"encoder weights A")
  same = run_state.plugged_record(str(out), plugged=(str(moved), str(decoder)))
  preflight.check_output_dir(str(out), config_lib.smoke(), False, same)

  encoder.write_bytes(b"encoder weights B")  # another network, same path and size
  other = run_state.plugged_record(str(out), plugged=(str(encoder), str(decoder)))
  with pytest.raises(ValueError, match=r"holds a run on another plugged network \(encoder .*enc.keras "
                                       r"\(sha256 [0-9a-f]{12}\).*now encoder .*--overwrite"):
    preflight.check_output_dir(str(out), config_lib.smoke(), False, other)
  preflight.check_output_dir(str(out), config_lib.smoke(), True, other)  # --overwrite starts afresh
  with pytest.raises(FileNotFoundError, match="no saved model at"):
    run_state.plugged_record(str(out), plugged=(str(tmp_path / "missing"), str(decoder)))


def test_a_savedmodel_folder_is_identified_by_every_file_in_it(tmp_path):
  folder = tmp_path / "sm"
  (folder / "variables").mkdir(parents=True)
  (folder / "saved_model.pb").write_bytes(b"graph")
  (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
  first = run_state.content_hash(str(folder))
  assert first == run_state.content_hash(str(folder))
  (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"weightz")
  assert run_state.content_hash(str(folder)) != first


def test_an_ali_dir_is_identified_by_its_newest_checkpoint(tmp_path):
  checkpoints_dir = tmp_path / "ali_run" / "ali" / "checkpoints"
  checkpoints_dir.mkdir(parents=True)
  for n in (20, 40):
    (checkpoints_dir / f"ckpt-{n}.index").write_bytes(b"index %d" % n)
    (checkpoints_dir / f"ckpt-{n}.data-00000-of-00001").write_bytes(b"data %d" % n)
  (checkpoints_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-40"\n')
  out = tmp_path / "run"
  record = run_state.plugged_record(str(out), ali_dir=str(tmp_path / "ali_run"))
  assert record["kind"] == "ali_dir" and record["checkpoint"] == "ckpt-40"
  _write_run(out, record)
  (checkpoints_dir / "ckpt-20.data-00000-of-00001").write_bytes(b"older, not what FDEN saw")
  run_state.check_plugged(str(out), run_state.plugged_record(str(out), ali_dir=str(tmp_path / "ali_run")))
  (checkpoints_dir / "ckpt-40.data-00000-of-00001").write_bytes(b"ALI trained further")
  with pytest.raises(ValueError, match=r"another plugged network \(--ali_dir .*ali_run \(ckpt-40"):
    run_state.check_plugged(str(out), run_state.plugged_record(str(out), ali_dir=str(tmp_path / "ali_run")))
  # The run's own ALI (and an --ali_dir naming the output directory itself) is identified by the config.
  assert run_state.plugged_record(str(out)) == run_state.plugged_record(str(out), ali_dir=str(out)) == \
      {"kind": "ali"}


def test_a_network_handed_over_in_python_is_identified_by_its_variables(tmp_path):
  a = [tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))]
  record = run_state.plugged_record(str(tmp_path), plugged=type("Net", (), {"name": "mine", "variables": a}))
  b = [tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3) + 1e-3)]
  other = run_state.plugged_record(str(tmp_path), plugged=type("Net", (), {"name": "mine", "variables": b}))
  assert record["kind"] == "mine" and record["sha256"] != other["sha256"]
  _write_run(tmp_path, record)
  with pytest.raises(ValueError, match="another plugged network"):
    run_state.check_plugged(str(tmp_path), other)


def test_runs_written_before_the_record_are_not_refused(tmp_path):
  (tmp_path / "config.json").write_text(config_lib.smoke().to_json())
  run_state.check_plugged(str(tmp_path), {"kind": "saved"})


# ---------------------------------------------------------------------------------------------------------
# The training loop on damaged state (items 4, 5, 7), with a step function that only counts.


def _stage(workdir, steps, counter):
  return training_loop.Stage("FDEN", str(workdir), steps, checkpoint_every=5, objects={"counter": counter},
                             optimizers=[keras.optimizers.SGD(0.1)], log_every=5)


def _train(workdir, steps, counter=None):
  """Runs the loop to `steps`; each step adds 1 to `counter`, so after a restore it reads the step restored.
  Returns (the steps run, the counter)."""
  counter = counter if counter is not None else tf.Variable(0.0)
  ran = []

  def step_fn(step, poison):
    ran.append(int(step))
    counter.assign_add(1.0)
    return {"finite": tf.constant(True), "loss": tf.constant(1.0)}

  training_loop.run(_stage(workdir, steps, counter), step_fn, show_progress=False)
  return ran, counter


@pytest.fixture
def trained(tmp_path):
  """A stage trained to step 20, checkpoints every 5 steps; CheckpointManager keeps ckpt-10, 15 and 20."""
  _train(tmp_path, 20)
  folder = tmp_path / "checkpoints"
  assert sorted(p.name for p in folder.glob("*.index")) == ["ckpt-10.index", "ckpt-15.index", "ckpt-20.index"]
  return tmp_path, folder


def _damage(folder, how):
  if how == "half-written state file":
    text = (folder / "checkpoint").read_text()
    (folder / "checkpoint").write_text(text[:len(text) // 2 + 3])
  elif how == "newest .index missing":
    (folder / "ckpt-20.index").unlink()
  elif how == "newest .data truncated":
    data = next(folder.glob("ckpt-20.data-*"))
    data.write_bytes(data.read_bytes()[:7])


@pytest.mark.parametrize("how,resumed_at,reason", [
    ("half-written state file", 20, "state file .* is damaged"),
    ("newest .index missing", 15, r"passed over ckpt-20 \(its .index file is missing\)"),
    ("newest .data truncated", 15, r"passed over ckpt-20 \("),
])
def test_a_damaged_checkpoint_resumes_from_the_newest_one_that_restores(trained, caplog, how, resumed_at,
                                                                        reason):
  workdir, folder = trained
  _damage(folder, how)
  with caplog.at_level(logging.WARNING):
    ran, counter = _train(workdir, 25)
  assert ran == list(range(resumed_at, 25)), "not from step 0, and no step skipped"
  assert counter.numpy() == 25.0  # the restored counter continued
  assert f"restored {folder / f'ckpt-{resumed_at}'}, the newest checkpoint that restores" in caplog.text
  assert re.search(reason, caplog.text), caplog.text
  # The state file lists intact checkpoints again, so the manager goes on deleting the oldest.
  assert tf.train.latest_checkpoint(str(folder)) == str(folder / "ckpt-25")
  assert len(tf.train.get_checkpoint_state(str(folder)).all_model_checkpoint_paths) == 3


def test_weights_for_evaluation_and_export_also_come_from_the_newest_checkpoint_that_restores(trained):
  _, folder = trained
  _damage(folder, "newest .data truncated")
  counter = tf.Variable(0.0)
  path = checkpoints.restore_latest_weights(str(folder.parent), "FDEN", counter=counter)
  assert path == str(folder / "ckpt-15") and counter.numpy() == 15.0


def test_when_no_checkpoint_restores_the_error_names_each_and_training_does_not_restart(trained):
  workdir, folder = trained
  for data in folder.glob("*.data-*"):
    data.write_bytes(b"\0")
  with pytest.raises(ValueError, match=r"no FDEN checkpoint under .* can be restored: ckpt-20 \(.*\); "
                                       r"ckpt-15 \(.*\); ckpt-10 .*move that folder aside"):
    _train(workdir, 25)


def test_a_torn_last_log_line_is_dropped_on_resume(trained, caplog):
  workdir, _ = trained
  log = workdir / "train_log.jsonl"
  with open(log, "a") as f:
    f.write('{"step": 25, "loss": 0.')  # killed mid-write
  assert [r["step"] for r in training_loop.read_log(str(log))] == [5, 10, 15, 20]
  with caplog.at_level(logging.WARNING):
    _train(workdir, 25)
  assert "dropped 1 torn line(s) (line 5" in caplog.text
  assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [5, 10, 15, 20, 25]


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_folder_and_the_run_resumes(tmp_path,
                                                                                          monkeypatch):
  real_save = tf.train.CheckpointManager.save

  def full_disk_at_10(self, checkpoint_number=None, **kwargs):
    if checkpoint_number == 10:
      raise tf.errors.ResourceExhaustedError(None, None, f"{self.directory}/ckpt-10_temp; No space left on "
                                             "device\n\t[[{{node SaveV2}}]]")
    return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk_at_10)
  with pytest.raises(training_loop.CheckpointWriteError) as error:
    _train(tmp_path, 20)
  message = str(error.value)
  assert isinstance(error.value, OSError)  # scripts/train.py: `error:` line, exit 2
  assert "\n" not in message and "No space left on device" in message
  assert message.startswith(f"cannot write the FDEN checkpoint of step 10 under {tmp_path / 'checkpoints'}")
  monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)
  ran, _ = _train(tmp_path, 20)  # space again: resumes from the last checkpoint written
  assert ran == list(range(5, 20))

  def enospc(self, checkpoint_number=None, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(tf.train.CheckpointManager, "save", enospc)
  with pytest.raises(training_loop.CheckpointWriteError, match="step 25 .*No space left on device"):
    _train(tmp_path, 25)


# ---------------------------------------------------------------------------------------------------------
# File modes (item 15).


def test_records_get_the_usual_modes_under_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    files.write_json(str(tmp_path / "a.json"), {"x": 1})
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o644
    os.umask(0o027)
    files.atomic_write(str(tmp_path / "b.png"), lambda f: f.write(b"png"), mode="wb")
    assert os.stat(tmp_path / "b.png").st_mode & 0o777 == 0o640
  finally:
    os.umask(old)
  assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
  assert sorted(os.listdir(tmp_path)) == ["a.json", "b.png"]  # no temporary left


def test_checkpoint_listing_reads_what_tensorflow_writes_and_refuses_a_torn_state_file(tmp_path):
  counter = tf.Variable(1.0)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(c=counter), str(tmp_path), max_to_keep=3)
  for n in (3, 7, 12):
    manager.save(checkpoint_number=n)
  expected = [str(tmp_path / f"ckpt-{n}") for n in (3, 7, 12)]
  assert run_state.state_file_paths(str(tmp_path)) == [expected[-1], *expected]
  assert run_state.checkpoint_candidates(str(tmp_path)) == expected[::-1]
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-12"\nall_model_checkpoint_paths: "ckp')
  assert run_state.state_file_paths(str(tmp_path)) is None
  assert run_state.checkpoint_candidates(str(tmp_path)) == expected[::-1]  # found from the files
