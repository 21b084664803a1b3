"""Every check that bad input can fail, run before TensorFlow is imported and before anything is written.

`scripts/train.py` calls `check` first, so a wrong flag, a missing data directory or an unusable --ali_dir
fails in about a second with one line, and `pipeline.train_and_evaluate` calls it again for Python users.
The one check left to the pipeline needs TensorFlow: whether an --ali_dir checkpoint can actually be read.
"""

import json
import os

from absl import logging

from fden_tf import config as config_lib
from fden_tf import run_state
from fden_tf.data import datasets
from fden_tf.data import split as split_lib

STAGES = ("all", "ali", "fden")


def _check_stage(stage, ali_dir, plugged):
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
  if stage == "ali" and (plugged or ali_dir):
    raise ValueError("--stage=ali trains ALI; it takes neither --ali_dir nor a plugged network")
  if stage == "fden" and not plugged and not ali_dir:
    raise ValueError("--stage=fden needs a trained network: pass --ali_dir (or --encoder/--decoder)")


def check_architecture(ali_config, image_shape):
  """The ALI architecture must take images of the dataset's height and width; its options must agree."""
  if ali_config.instance_noise_final is not None and not ali_config.instance_noise:
    raise ValueError("--ali_instance_noise_final decays the instance noise: it needs --ali_instance_noise > 0")
  if ali_config.generator_upsampling not in config_lib.GENERATOR_UPSAMPLINGS:
    raise ValueError(f"unknown --ali_generator_upsampling {ali_config.generator_upsampling!r}; choose one of "
                     f"{config_lib.GENERATOR_UPSAMPLINGS}")
  size = config_lib.ARCHITECTURE_IMAGE_SIZE.get(ali_config.architecture)
  if size is None:
    raise ValueError(f"unknown ALI architecture {ali_config.architecture!r}; choose one of "
                     f"{sorted(config_lib.ARCHITECTURE_IMAGE_SIZE)}")
  if tuple(image_shape[:2]) != (size, size):
    raise ValueError(f"ALI architecture {ali_config.architecture!r} takes {size}x{size} images, the dataset "
                     f"has {image_shape[0]}x{image_shape[1]}; pass --image_size={size} or another architecture")


def warn_if_codes_cannot_fill_the_latent(ali_config):
  """A latent wider than ALI's last encoder layer is legal (and how older runs were trained): said, not
  refused. `train_ali.build_ali` says it once for each ALI it builds, where `check_architecture` runs on
  every preflight pass as well."""
  bound = config_lib.code_rank_bound(ali_config)
  if ali_config.latent_dim > bound:
    logging.warning("--latent_dim=%d exceeds the %d features of ALI's last encoder layer at width %g: the codes "
                    "span at most %d of the %d dimensions, so prior samples G_x(z), z ~ N(0, I), fall partly "
                    "where no encoded image does; --latent_dim=%d or a wider ALI avoids it",
                    ali_config.latent_dim, bound, ali_config.width, bound, ali_config.latent_dim, bound)


def check_fden_options(fden_config):
  """FDEN options a hand-built config could get wrong and that would otherwise fail only after ALI has
  trained: standardization names one of fden.LatentStatistics' two scales; cache_jitters counts copies;
  style_dim, where set, is a size; the Entangler refit counts steps and has a batch; the learning-rate
  schedule is one we know."""
  if fden_config.learning_rate_schedule not in config_lib.LEARNING_RATE_SCHEDULES:
    raise ValueError(f"unknown learning_rate_schedule {fden_config.learning_rate_schedule!r}; choose one of "
                     f"{config_lib.LEARNING_RATE_SCHEDULES}")
  if fden_config.standardization not in config_lib.STANDARDIZATIONS:
    raise ValueError(f"unknown standardization {fden_config.standardization!r}; choose one of "
                     f"{config_lib.STANDARDIZATIONS}")
  if fden_config.cache_jitters < 0:
    raise ValueError(f"cache_jitters must be >= 0, got {fden_config.cache_jitters}")
  if fden_config.style_dim is not None and fden_config.style_dim < 1:
    raise ValueError(f"style_dim must be >= 1 (or None: Dim), got {fden_config.style_dim}")
  if fden_config.entangler_refit_steps < 0:
    raise ValueError(f"entangler_refit_steps must be >= 0, got {fden_config.entangler_refit_steps}")
  if fden_config.entangler_refit_batch_size < 1:
    raise ValueError(f"entangler_refit_batch_size must be >= 1, got {fden_config.entangler_refit_batch_size}")


def recorded_image_shape(ali_run_dir):
  """(H, W, C) the run's ALI was trained on, from its `ali/network.json`; None for runs that predate it."""
  record = os.path.join(ali_run_dir, "ali", "network.json")
  if not os.path.exists(record):
    return None
  with open(record) as f:
    return tuple(json.load(f)["image_shape"])


def check_ali_dir(ali_dir, image_shape):
  """An earlier run's ALI: config.json, a checkpoint, and images of `image_shape`. Returns its ALIConfig."""
  ali_config = config_lib.load(ali_dir).ali
  trained_on = recorded_image_shape(ali_dir)
  if trained_on is not None:
    if trained_on != tuple(image_shape):
      raise ValueError(f"--ali_dir {ali_dir} holds an ALI for {'x'.join(map(str, trained_on))} images but "
                       f"the dataset has {'x'.join(map(str, image_shape))}; use an ALI trained on this dataset")
  if not os.path.exists(os.path.join(ali_dir, "ali", "checkpoints", "checkpoint")):
    raise FileNotFoundError(f"--ali_dir {ali_dir} holds no ALI checkpoint (train one with --stage=ali)")
  return ali_config


def holds_other_config(output_dir, config) -> bool:
  """Whether `output_dir` holds a run of a configuration other than `config`. Compared as this version
  reads it, so a field added since the run was written is no difference."""
  return json.loads(config_lib.load(output_dir).to_json()) != json.loads(config.to_json())


def check_output_dir(output_dir, config, overwrite, plugged_record=None, ali_dir=None, writer=True):
  """Refuses a folder that cannot be written, that another live process trains in (its lock), or that holds
  a run of another configuration or on another plugged network (`plugged_record`, run_state.plugged_record).
  Writes nothing: the nearest existing ancestor must be a writable folder. writer=False: a cluster's
  non-chief worker, which trains beside the chief that holds the lock and writes nothing there."""
  holder = run_state.lock_holder(output_dir) if writer else None
  if holder is not None:
    raise run_state.locked_error(output_dir, holder)
  if overwrite:
    run_state.check_overwrite(output_dir, ali_dir)
  path = os.path.join(output_dir, "config.json")
  if os.path.exists(path) and not overwrite:
    if holds_other_config(output_dir, config):
      raise ValueError(f"--output_dir {output_dir} holds a run of a different configuration; pass a new "
                       "--output_dir, or --overwrite to replace it")
    run_state.check_plugged(output_dir, plugged_record)
  existing = os.path.abspath(output_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--output_dir {output_dir} is not writable ({existing} is not a writable folder); "
                     "choose another folder")


def check(config, output_dir, stage="all", ali_dir=None, plugged=False, overwrite=False, data=None,
          plugged_record=None, writer=True):
  """Checks a run's inputs. Returns (config, data): the config with the plugged ALI's own section when
  --ali_dir is given (the run's record names the network it really used), and the loaded dataset.
  plugged_record: what identifies the plugged network (run_state.plugged_record), compared with the one an
  existing run in `output_dir` recorded. writer: whether this process writes `output_dir` (False on a
  cluster's non-chief workers)."""
  _check_stage(stage, ali_dir, plugged)
  check_fden_options(config.fden)
  data = data or datasets.load(config.data)
  f = config.fden
  # The test split first: it usually has fewer classes, and its episodes are the ones the user asked for.
  split_lib.check_episode_shape(data.test.labels, f.way, f.shot, f.query, "the test split",
                                class_names=data.test.class_names)
  if data.test.num_classes < 2:  # the translation figure and metrics swap identities between two classes
    raise ValueError(f"the test split has {data.test.num_classes} class; translating identities needs at "
                     "least 2 (add test classes, or a larger test_fraction)")
  split_lib.check_episode_shape(data.train.labels, *f.training_episode, "the training split",
                                flag_prefix="train_" if f.training_episode != (f.way, f.shot, f.query) else "",
                                class_names=data.train.class_names)
  if ali_dir and not plugged:
    config = config.replace(ali=check_ali_dir(ali_dir, data.train.image_shape))
  elif not plugged:
    check_architecture(config.ali, data.train.image_shape)
    if config.ali.batch_size > len(data.train.images):
      raise ValueError(f"--batch_size={config.ali.batch_size} exceeds the {len(data.train.images)} training "
                       "images")
  check_output_dir(output_dir, config, overwrite, plugged_record, ali_dir, writer)
  return config, data
