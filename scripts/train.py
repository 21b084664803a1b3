"""Train ALI and FDEN, evaluate few-shot accuracy from f_ide, draw the translation figure.

    python scripts/train.py                                   # the default main job, glyphs, CPU preset
    python scripts/train.py --fden_steps=500 --output_dir=/tmp/run
    python scripts/train.py --stage=fden --ali_dir=runs/glyphs --way=20 --output_dir=runs/glyphs-20w
    python scripts/train.py --stage=fden --encoder=enc.keras --decoder=dec.keras   # your own network
    python scripts/train.py --dataset=folder --data_dir=my_images/ --image_size=32 --channels=1
    python scripts/train.py --dataset=omniglot --data_dir=../shared/data/omniglot \
        --splits_dir=../shared/data/omniglot/splits/vinyals --output_dir=runs/omniglot
    python scripts/train.py --dataset=oxford_flowers102 --output_dir=runs/flowers   # TFDS, 64x64 RGB
    python scripts/train.py --flagfile=my.flags

Flags only live here; the library receives one Config (fden_tf/config.py). Exit status: 0 done, 2 bad
input (one `error:` line, nothing written) or a file that cannot be written (a full disk: re-run to resume),
1 training diverged beyond recovery.
"""

import json
import os
import sys

from absl import flags
from absl import logging

from fden_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", None, ["cpu", "paper", "smoke", "omniglot_cpu", "omniglot_paper", "flowers_cpu",
                                    "flowers_paper"],
                  "Named configuration preset (fden_tf/config.py); default: the dataset's (flowers_cpu for "
                  "oxford_flowers102, else cpu).")
# The preset a dataset gets when --preset is not given (every other dataset: cpu).
DATASET_PRESETS = {"oxford_flowers102": "flowers_cpu"}
flags.DEFINE_string("dataset", None, "Dataset (default: the preset's; glyphs for cpu): glyphs (embedded), "
                    "omniglot, folder (--data_dir of class folders), or any TFDS image-classification dataset by "
                    "name (e.g. oxford_flowers102).")
flags.DEFINE_string("data_dir", None, "Folder the dataset is read from: for omniglot the folder holding "
                    "images_background.zip and images_evaluation.zip (else TFDS is used); for folder your class "
                    "folders; for TFDS datasets TFDS's data directory.")
flags.DEFINE_enum("split", "vinyals", ["vinyals", "lake"], "Omniglot protocol: vinyals (the paper's: rotations "
                  "as classes, trainval.txt / test.txt) or lake (images_background -> images_evaluation).")
flags.DEFINE_boolean("train_rotations", False, "With --split=lake: the background characters' 90/180/270-degree "
                     "rotations as training classes of their own (3,856 classes); test characters stay upright.")
flags.DEFINE_string("splits_dir", None, "Folder holding the Vinyals split lists trainval.txt and test.txt "
                    "(default: downloaded once from jakesnell/prototypical-networks and cached).")
flags.DEFINE_integer("image_size", None, "Square image size: 32 (ALI's SVHN model) or 64 (its CelebA model); "
                     "default 32 for glyphs, omniglot and folder, 64 for TFDS datasets.")
flags.DEFINE_integer("channels", None, "1 (grayscale) or 3 (RGB); default 1 for glyphs, omniglot and folder, 3 "
                     "for TFDS datasets.")
flags.DEFINE_string("output_dir", None, "Where checkpoints, metrics and figures go (default runs/<dataset>); "
                    "re-running the same command on it resumes.")
flags.DEFINE_enum("stage", "all", ["all", "ali", "fden"], "Train ALI then FDEN (all), or one of them.")
flags.DEFINE_string("ali_dir", None, "Output directory of an earlier ALI run to plug FDEN into.")
flags.DEFINE_string("encoder", None, "Your own frozen encoder (.keras file or SavedModel dir), with --decoder.")
flags.DEFINE_string("decoder", None, "Your own frozen decoder (.keras file or SavedModel dir), with --encoder.")
flags.DEFINE_integer("way", None, "Classes per episode (C) of the few-shot task, and of training episodes "
                     "unless --train_way is given.")
flags.DEFINE_integer("shot", None, "Support samples per class (K); likewise for training unless --train_shot.")
flags.DEFINE_integer("query", None, "Query samples per class (Q); likewise for training unless --train_query.")
flags.DEFINE_integer("train_way", None, "Classes per training episode, when training should use more (or "
                     "fewer) than the task: e.g. --way=5 --train_way=20.")
flags.DEFINE_integer("train_shot", None, "Support samples per class in training episodes.")
flags.DEFINE_integer("train_query", None, "Query samples per class in training episodes.")
flags.DEFINE_integer("ali_steps", None, "ALI training steps.")
flags.DEFINE_integer("fden_steps", None, "FDEN training steps (each a batch of episodes).")
flags.DEFINE_integer("batch_size", None, "ALI batch size (images).")
flags.DEFINE_integer("episodes_per_batch", None, "FDEN batch size (episodes a step; the paper: 16).")
flags.DEFINE_integer("eval_episodes", None, "Test episodes for the few-shot accuracy (paper: 1000).")
flags.DEFINE_integer("latent_dim", None, "ALI latent size (Dim).")
flags.DEFINE_float("ali_reconstruction_weight", None, "Weight of ALI's l2 reconstruction term (paper "
                   "Appendix B.2); 0 disables it.")
flags.DEFINE_float("ali_prior_matching_weight", None, "Weight of the MMD between ALI's encoder codes and "
                   "prior draws (beyond ALI; 0 = off): makes prior samples G_x(z), z ~ N(0, I) look like the "
                   "data (docs/results.md: 100 on glyphs; preset cpu: 100).")
flags.DEFINE_float("ali_prior_moment_weight", None, "Weight of the distance of ALI's posterior means' mean "
                   "and second moments from the prior's (beyond ALI; 0 = off): fewer latent directions left "
                   "without variance for prior draws to fill (docs/results.md; preset cpu: 10).")
flags.DEFINE_float("ali_instance_noise", None, "Standard deviation of Gaussian noise on the images ALI's "
                   "discriminator sees (beyond ALI; 0 = off); with --ali_prior_matching_weight=100, 0.2 keeps "
                   "the discriminator from winning outright on glyphs (docs/results.md; preset cpu: "
                   "0.2).")
flags.DEFINE_float("ali_instance_noise_final", None, "Decay the instance noise linearly from "
                   "--ali_instance_noise at step 0 to this at ALI's last step (beyond ALI; default: constant), "
                   "so that the discriminator sees the images' fine detail late in training.")
flags.DEFINE_boolean("ali_mirror", None, "Flip each of ALI's training images left-right with probability 1/2 "
                     "(beyond ALI): for data whose content a mirror keeps, such as flowers; not glyphs or "
                     "characters.")
flags.DEFINE_enum("ali_generator_upsampling", None, ["transposed", "resize"],
                  "How ALI's generator upsamples: transposed (ALI's strided transposed convolutions) or resize "
                  "(beyond ALI: nearest-neighbour resize and a 3x3 convolution, Odena et al. 2016, which leaves "
                  "no checkerboard in samples).")
flags.DEFINE_float("ali_discriminator_lr_factor", None, "ALI discriminator's learning rate as a multiple of "
                   "ALI's (1 = ALI's).")
flags.DEFINE_enum("fden_learning_rate_schedule", None, ["constant", "cosine"],
                  "FDEN's learning rate over its episodic steps: held (constant, the paper's) or decayed to "
                  "nothing on a half cosine (beyond the paper; presets cpu, omniglot_cpu: cosine).")
flags.DEFINE_float("alpha", None, "Weight of FDEN's L_R (Eq. 3) in Eq. 6 (the paper: 1; preset cpu: 0.4, on "
                   "standardized codes).")
flags.DEFINE_float("identity_swap_weight", None, "Weight of FDEN's within-class identity swap (beyond the "
                   "paper; 0 = off; preset cpu: 0.07): ||z_A - E(f_ide of a class-mate, f_sty_A)||^2 "
                   "(docs/paper.md).")
flags.DEFINE_float("identity_invariance_weight", None, "Weight of Fisher's criterion on f_ide (beyond the "
                   "paper; 0 = off): its within-class over its total scatter in each episode, pushing style out "
                   "of f_ide (docs/paper.md).")
flags.DEFINE_float("neutral_style_weight", None, "Weight of the neutral-style term (beyond the paper; 0 = "
                   "off): ||z of a class-mate - E(f_ide, 0)||^2, A's identity with the neutral style decodes to "
                   "the code of A's class in its average style (docs/paper.md).")
flags.DEFINE_float("style_bottleneck_weight", None, "Weight of the rate of FDEN's style bottleneck (beyond "
                   "the paper; 0 = off; preset cpu: 0.1): ||f_sty||^2 / 2, the Entangler reading f_sty + "
                   "N(0, I) in training.")
flags.DEFINE_float("clean_decoding_weight", None, "Weight of Eq. 3 on the noiseless, gradient-stopped factors "
                   "(beyond the paper; 0 = off; preset cpu: 0.07): trains the Entangler alone.")
flags.DEFINE_integer("style_dim", None, "Size of f_sty (beyond the paper, which uses Dim; preset cpu: 8, "
                     "glyphs' 6 style factors): a narrow style factor has no room for identity.")
flags.DEFINE_enum("standardize_latents", None, ["none", "per_dimension", "global"], "FDEN on standardized "
                  "codes, undone after the Entangler (beyond the paper, which uses raw codes): per dimension, or "
                  "one scale for all (global: keeps z's geometry), so that the weights of the terms measured in "
                  "z mean the same for any plugged network (preset cpu: global).")
flags.DEFINE_boolean("cache_mirrors", None, "Also train FDEN on the codes of the horizontally mirrored "
                     "training images, encoded once (beyond the paper): for data whose classes a mirror keeps, "
                     "such as flowers; not glyphs or characters.")
flags.DEFINE_integer("cache_jitters", None, "Also train FDEN on the codes of this many randomly jittered copies "
                     "of each training image (rotation <= 10 degrees, scale 0.9-1.1, shift <= 6%), encoded once "
                     "(beyond the paper; default 0).")
flags.DEFINE_integer("entangler_refit_steps", None, "Steps that fit the Entangler alone to L_R (Eq. 3) on the "
                     "noiseless factors after FDEN's episodic steps, everything else frozen (beyond the paper; "
                     "0 = off; presets cpu, omniglot_cpu, flowers_cpu: 2000): z~ keeps closer to z, f_ide and "
                     "f_sty are unchanged.")
flags.DEFINE_integer("checkpoint_every", None, "Steps between checkpoints, both stages.")
flags.DEFINE_integer("max_nonfinite_steps", None, "Consecutive non-finite steps before restoring the last "
                     "checkpoint at a reduced learning rate.")
flags.DEFINE_integer("seed", None, "Random seed (data, initialisation, episodes).")
flags.DEFINE_integer("fden_seed", None, "Seed of what the FDEN stage alone draws (its jittered copies, initial "
                     "weights, training episodes), leaving the data split, ALI and the test episodes to --seed: "
                     "FDEN's own run-to-run spread on one network (default: --seed).")
flags.DEFINE_boolean("deterministic", False, "Enable TensorFlow's op determinism.")
flags.DEFINE_boolean("progress", True, "Show progress lines with ETA (--noprogress to silence).")
flags.DEFINE_boolean("export", True, "End by exporting the SavedModel to <output_dir>/saved_models/<name>/<version> "
                     "(--noexport to skip).")
flags.DEFINE_boolean("overwrite", False, "Start afresh in an --output_dir holding a run (of any "
                     "configuration): the earlier run is moved aside to <output_dir>.old-<UTC time>.")
flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multiworker", "one_device"],
                  "tf.distribute strategy: auto (every local GPU if any, else one device), mirrored, "
                  "multiworker (cluster from TF_CONFIG) or one_device. Not part of the config: a run can "
                  "resume on other hardware.")

POSITIVE = ("ali_steps", "fden_steps", "batch_size", "episodes_per_batch", "way", "shot", "query",
            "train_way", "train_shot", "train_query",
            "eval_episodes", "latent_dim", "checkpoint_every", "max_nonfinite_steps", "image_size", "channels",
            "style_dim", "ali_discriminator_lr_factor")


def _given(**names):
  return {key: getattr(FLAGS, flag) for key, flag in names.items() if getattr(FLAGS, flag) is not None}


def build_config():
  from fden_tf import config as config_lib
  for flag in POSITIVE:
    if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) <= 0:
      raise ValueError(f"--{flag} must be positive, got {getattr(FLAGS, flag)}")
  for flag in ("ali_reconstruction_weight", "ali_prior_matching_weight", "ali_prior_moment_weight",
               "ali_instance_noise",
               "ali_instance_noise_final", "alpha", "identity_swap_weight", "identity_invariance_weight",
               "neutral_style_weight", "style_bottleneck_weight", "clean_decoding_weight", "cache_jitters",
               "entangler_refit_steps"):
    if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) < 0:
      raise ValueError(f"--{flag} must be >= 0, got {getattr(FLAGS, flag)}")
  if FLAGS.latent_dim is not None and (FLAGS.ali_dir or FLAGS.encoder):
    raise ValueError("--latent_dim is the plugged network's own size; drop it when plugging --ali_dir or "
                     "--encoder")
  from fden_tf.data import datasets
  config = config_lib.get(FLAGS.preset or DATASET_PRESETS.get(FLAGS.dataset, "cpu"))
  dataset = FLAGS.dataset or config.data.dataset
  image_size, channels = datasets.default_image_shape(dataset)
  image_size, channels = FLAGS.image_size or image_size, FLAGS.channels or channels
  # Checked before any data is loaded (a 64x64 TFDS dataset takes minutes): what later stages would refuse.
  if channels not in (1, 3):
    raise ValueError(f"--channels must be 1 (grayscale) or 3 (RGB), got {channels}")
  sizes = sorted(config_lib.ARCHITECTURE_IMAGE_SIZE.values())
  if not FLAGS.encoder and image_size not in sizes:
    raise ValueError(f"--image_size={image_size} fits no ALI architecture; choose one of {sizes} (any size "
                     "works with your own --encoder/--decoder)")
  if FLAGS.output_dir is None:
    FLAGS.output_dir = os.path.join("runs", dataset)
  data = dict(dataset=dataset, data_dir=FLAGS.data_dir, split=FLAGS.split, splits_dir=FLAGS.splits_dir,
              train_rotations=FLAGS.train_rotations, image_size=image_size, channels=channels)
  ali = _given(steps="ali_steps", latent_dim="latent_dim", batch_size="batch_size",
               reconstruction_weight="ali_reconstruction_weight",
               prior_matching_weight="ali_prior_matching_weight", prior_moment_weight="ali_prior_moment_weight",
               instance_noise="ali_instance_noise",
               instance_noise_final="ali_instance_noise_final",
               discriminator_lr_factor="ali_discriminator_lr_factor", mirror="ali_mirror",
               generator_upsampling="ali_generator_upsampling", checkpoint_every="checkpoint_every")
  size_to_architecture = {size: name for name, size in config_lib.ARCHITECTURE_IMAGE_SIZE.items()}
  if image_size in size_to_architecture:  # the paper's choice of ALI model for the image size
    ali["architecture"] = size_to_architecture[image_size]
  fden = _given(way="way", shot="shot", query="query", train_way="train_way", train_shot="train_shot",
                train_query="train_query", steps="fden_steps", eval_episodes="eval_episodes",
                episodes_per_batch="episodes_per_batch", checkpoint_every="checkpoint_every",
                learning_rate_schedule="fden_learning_rate_schedule",
                alpha="alpha", identity_swap_weight="identity_swap_weight",
                identity_invariance_weight="identity_invariance_weight",
                neutral_style_weight="neutral_style_weight", seed="fden_seed",
                style_bottleneck_weight="style_bottleneck_weight",
                clean_decoding_weight="clean_decoding_weight", style_dim="style_dim",
                cache_mirrors="cache_mirrors", cache_jitters="cache_jitters",
                entangler_refit_steps="entangler_refit_steps")
  if FLAGS.standardize_latents is not None:
    fden["standardize_latents"] = FLAGS.standardize_latents != "none"
    if fden["standardize_latents"]:
      fden["standardization"] = FLAGS.standardize_latents
  top = _given(max_nonfinite_steps="max_nonfinite_steps")
  top["deterministic"] = FLAGS.deterministic
  for flag in ("seed", "fden_seed"):
    if getattr(FLAGS, flag) is not None and getattr(FLAGS, flag) < 0:
      raise ValueError(f"--{flag} must be a non-negative integer, got {getattr(FLAGS, flag)}")
  if FLAGS.seed is not None:
    top["seed"] = data["seed"] = FLAGS.seed
  return config.replace(data=data, ali=ali, fden=fden, **top)


def main(argv):
  del argv
  from fden_tf import preflight
  from fden_tf import run_state
  try:
    # Before TensorFlow is imported: bad input fails in a second or two, and nothing is written.
    config = build_config()
    if bool(FLAGS.encoder) != bool(FLAGS.decoder):
      raise ValueError("--encoder and --decoder go together")
    if FLAGS.encoder and FLAGS.stage != "fden":
      raise ValueError("plugging your own --encoder/--decoder needs --stage=fden")
    strategy, writer = FLAGS.strategy, True
    if strategy == "multiworker":  # must exist before TensorFlow runs anything (a TFDS loader would)
      from fden_tf import distribute
      strategy = distribute.get_strategy(strategy)
      writer = distribute.is_chief(strategy)  # the others train beside the chief, which holds the lock
    paths = (FLAGS.encoder, FLAGS.decoder) if FLAGS.encoder else None
    record = run_state.plugged_record(FLAGS.output_dir, FLAGS.ali_dir, paths)
    config, data = preflight.check(config, FLAGS.output_dir, FLAGS.stage, FLAGS.ali_dir, bool(FLAGS.encoder),
                                   FLAGS.overwrite, plugged_record=record, writer=writer)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  cli.import_tensorflow()  # quietly, once the cheap checks passed
  from fden_tf import fewshot
  from fden_tf import pipeline
  from fden_tf import plugin
  from fden_tf import training_loop
  try:
    plugged = plugin.load_saved(FLAGS.encoder, FLAGS.decoder) if FLAGS.encoder else None
    metrics = pipeline.train_and_evaluate(config, FLAGS.output_dir, FLAGS.stage, FLAGS.ali_dir, plugged,
                                          FLAGS.overwrite, show_progress=FLAGS.progress,
                                          export=FLAGS.export, data=data, strategy=strategy)
  except (ValueError, OSError) as e:  # OSError: also a checkpoint or file that cannot be written (disk full)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except training_loop.DivergenceError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if "fewshot" in metrics:
    print(fewshot.format_result(metrics["fewshot"]))
    for name, result in metrics["fewshot_baselines"].items():
      print("  baseline " + fewshot.format_result(result, name))
  print(f"wrote {FLAGS.output_dir}/metrics.json" +
        (f" and {FLAGS.output_dir}/translation.png" if "fewshot" in metrics else ""))
  logging.info("metrics: %s", json.dumps(metrics))


if __name__ == "__main__":
  cli.run(main)
