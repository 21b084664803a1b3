"""One frozen configuration object with named presets.

A function receives only the part it needs (`config.ali`, `config.fden`, ...). Presets are recipes:

* ``paper``: the paper's Appendix B (Table 2 for FDEN, ALI's SVHN model at full width, latent 256) with
  ALI's own hyperparameters; sized for a GPU.
* ``cpu``: the default main job: the same method, narrowed (ALI width 1/4, latent 64, FDEN layer widths
  1/2) so `python scripts/train.py` finishes on a 2-core CPU in 7-11 minutes on ``glyphs``; ALI with prior
  matching and instance noise (its discriminator does not win outright), FDEN with the factorization levers.
* ``smoke``: seconds-long runs for tests.
"""

import dataclasses
import json
import os
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = "glyphs"
  data_dir: Optional[str] = None
  image_size: int = 32  # 32 for ALI's SVHN model, 64 for its CelebA model
  channels: int = 1
  test_fraction: float = 0.2  # share of classes held out when a folder or TFDS dataset is split by class
  # omniglot only: the few-shot protocol ("vinyals": the paper's rotated classes; "lake": background ->
  # evaluation) and the folder of the Vinyals split lists (None: downloaded once and cached).
  split: str = "vinyals"
  splits_dir: Optional[str] = None
  # omniglot "lake" only: the training characters' 90/180/270-degree rotations as training classes of their
  # own (the test characters stay upright). Measured in docs/results.md ("Omniglot, Lake's protocol").
  train_rotations: bool = False
  # glyphs only: how many classes to generate and how many of them are held out as unseen test classes.
  glyphs_classes: int = 1200
  glyphs_test_classes: int = 200
  glyphs_samples_per_class: int = 20
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class ALIConfig:
  """ALI (Dumoulin et al. 2017) with the paper's Appendix B.2 options."""
  architecture: str = "svhn"  # "svhn" (32x32 input) or "celeba" (64x64 input)
  latent_dim: int = 256
  width: float = 1.0  # multiplies every convolution's channel count (1.0 = the published model)
  batch_size: int = 100
  steps: int = 100_000
  learning_rate: float = 1e-4
  beta_1: float = 0.5
  beta_2: float = 0.999
  # Appendix B.2: weight of an l2 reconstruction term ||x - G_x(G_z(x))||^2 added to the generator loss.
  reconstruction_weight: float = 0.0
  # Beyond ALI (0 = ALI's objective): weight of KL(G_z(x) || N(0, I)) in the encoder's loss, which keeps the
  # codes where the prior samples are (docs/paper.md, "Decisions"; measured to collapse the posterior).
  kl_weight: float = 0.0
  # Beyond ALI: weight of MMD(aggregate codes G_z(x), prior draws) (losses.mmd_imq) in the encoder's loss.
  prior_matching_weight: float = 0.0
  # Beyond ALI: weight of the distance of the posterior means' first two moments from the prior's
  # (losses.prior_moment_matching on mu) in the encoder's loss. The wide kernel of the MMD barely sees how
  # the codes' variance is spread over directions; left to it, the encoder codes in a few directions and
  # leaves others without variance, where prior draws reach the generator as inputs it never reconstructed
  # (sample_quality.thin_directions). On mu, not mu + sigma*eps: there the diagonal posterior noise would
  # fill every direction by drowning the codes (docs/results.md, Oxford Flowers 102).
  prior_moment_weight: float = 0.0
  # The discriminator's learning rate as a multiple of `learning_rate` (1 = ALI's).
  discriminator_lr_factor: float = 1.0
  # Beyond ALI: instance noise (Sonderby et al. 2017), the standard deviation of Gaussian noise added to
  # the real and the generated images the discriminator sees (pixels in [0, 1]); 0 = ALI's.
  instance_noise: float = 0.0
  # Beyond ALI: where set, the instance noise decays linearly from `instance_noise` at step 0 to this at the
  # last of `steps` (Sonderby et al. anneal it), so that D sees the pixels' fine detail late in training;
  # None = constant. A run resumed to more steps redraws the schedule over its new length.
  instance_noise_final: Optional[float] = None
  # Beyond ALI: flip each training image left-right with probability 1/2 (drawn from (seed, step)), for
  # data whose content a mirror keeps (flowers; not glyphs or characters).
  mirror: bool = False
  # Beyond ALI: how the generator upsamples (one of GENERATOR_UPSAMPLINGS). "transposed" is ALI's strided
  # transposed convolutions; "resize" replaces each strided one by a nearest-neighbour resize to the same
  # feature-map size and a 3x3 stride-1 convolution (Odena et al. 2016), which cannot paint the checkerboard
  # that a kernel not divisible by its stride (the CelebA model's 7x7 at stride 2) leaves in samples.
  generator_upsampling: str = "transposed"
  checkpoint_every: int = 1000


# ALIConfig.generator_upsampling: ALI's strided transposed convolutions, or resize-convolutions.
GENERATOR_UPSAMPLINGS = ("transposed", "resize")
# FDENConfig.standardization: each coordinate its own scale, or one scale (the RMS spread) for every coordinate.
STANDARDIZATIONS = ("per_dimension", "global")
# FDENConfig.learning_rate_schedule: the episodic steps' rate held (the paper's), or decayed on a half cosine.
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class FDENConfig:
  """FDEN (Table 2) and its episodic training."""
  hidden_scale: float = 1.0  # multiplies Table 2's hidden widths (512/1024/256/64); 1.0 = the paper
  dropout: float = 0.2
  leaky_slope: float = 0.01
  init_stddev: float = 0.001
  learning_rate: float = 1e-4
  beta_1: float = 0.5
  beta_2: float = 0.999
  # Beyond the paper ("constant" in the `paper` preset): "cosine" decays the episodic steps' rate from
  # learning_rate to nothing on a half cosine (SGDR without restarts, Loshchilov & Hutter 2017).
  learning_rate_schedule: str = "constant"
  alpha: float = 1.0  # weight of L_R (Eq. 3)
  beta: float = 1.0  # weight of L_C (Eq. 5)
  gamma: float = 0.5  # weight of L_M (Eq. 4)
  grl_lambda: float = 1.0  # the gradient reversal layer's -lambda
  adaptive_clipping: bool = True  # Eq. 7
  # Beyond the paper (0 / False / None in the `paper` preset; docs/paper.md, "Levers"): FDEN on standardized
  # codes (fden.LatentStatistics), the swap-consistency term (losses.swap_consistency_loss), the style
  # confusion term (losses.style_confusion_loss), the within-class identity swap (losses.identity_swap_loss),
  # the style bottleneck's rate (losses.style_rate; the Entangler then reads f_sty + N(0, I) in training)
  # and clean decoding (Eq. 3 on the noiseless factors, gradient stopped: it trains the Entangler alone),
  # each added to L_u with these weights; style_dim narrows f_sty (None: Dim, the paper's).
  standardize_latents: bool = False
  standardization: str = "per_dimension"  # one of STANDARDIZATIONS (fden.LatentStatistics)
  swap_weight: float = 0.0
  style_confusion_weight: float = 0.0
  identity_swap_weight: float = 0.0
  identity_invariance_weight: float = 0.0
  neutral_style_weight: float = 0.0
  style_bottleneck_weight: float = 0.0
  clean_decoding_weight: float = 0.0
  style_dim: Optional[int] = None
  # Beyond the paper: FDEN also trains on the codes of the horizontally mirrored training images (encoded
  # once, beside the originals; the test split is never mirrored). Only for data whose classes a mirror
  # keeps (flowers; not glyphs or Omniglot's characters).
  cache_mirrors: bool = False
  # Beyond the paper: FDEN also trains on the codes of this many randomly jittered copies of each training
  # image (rotation up to 10 degrees, scale 0.9-1.1, shift up to 6% of the side: data/augment.py), encoded
  # once beside the originals and labelled as them; the test split is never jittered.
  cache_jitters: int = 0
  # Beyond the paper: after the `steps` of episodic training, this many more steps fit the Entangler alone
  # to L_R (Eq. 3) on the noiseless factors of random batches of the cached codes (a fresh Adam at
  # `learning_rate`, decayed linearly to nothing), the Disentangler and the statisticians frozen. f_ide and
  # f_sty (so every few-shot and leakage number) are those of the episodic training; only z~ = E(f_ide,
  # f_sty) moves toward z (docs/results.md, "Sixth ladder: the Entangler refit").
  entangler_refit_steps: int = 0
  entangler_refit_batch_size: int = 256
  # The few-shot task: C-way K-shot episodes with Q query samples per class, evaluated on unseen classes.
  way: int = 5
  shot: int = 1
  query: int = 1
  # Training episodes, where they differ from the task (None: the task's). More classes per training
  # episode than the test asks for is Prototypical Networks' "higher way" training (Snell et al. 2017).
  train_way: Optional[int] = None
  train_shot: Optional[int] = None
  train_query: Optional[int] = None
  episodes_per_batch: int = 16  # Table 2's batch size: 16 episodes a step
  steps: int = 100_000
  eval_episodes: int = 1000
  # What the FDEN stage draws (its cache's jittered copies, its initial weights, its training episodes) comes
  # from this seed where set, else from Config.seed; the data split, the plugged network and the test
  # episodes stay Config.seed's. So FDEN's own run-to-run spread can be measured on one network and split.
  seed: Optional[int] = None
  checkpoint_every: int = 1000

  @property
  def total_steps(self) -> int:
    """The FDEN stage's steps: the episodic ones, then the Entangler refit's."""
    return self.steps + self.entangler_refit_steps

  @property
  def training_episode(self) -> tuple:
    """(way, shot, query) of training episodes: train_* where set, else the task's."""
    return (self.train_way or self.way, self.train_shot or self.shot, self.train_query or self.query)


@dataclasses.dataclass(frozen=True)
class Config:
  data: DataConfig = DataConfig()
  ali: ALIConfig = ALIConfig()
  fden: FDENConfig = FDENConfig()
  seed: int = 0
  log_every: int = 100
  # Divergence guard (training_loop): restore the last checkpoint after this many non-finite steps in a row,
  # continuing at recovery_lr_factor times the learning rate; a second such failure stops the run.
  max_nonfinite_steps: int = 10
  recovery_lr_factor: float = 0.5
  deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
  # Effort of the disentanglement metrics at the end of training (fden_tf/metrics).
  metrics_samples: int = 2000
  metrics_mine_steps: int = 600
  metrics_translation_pairs: int = 500

  def replace(self, **sections) -> "Config":
    """Returns a copy with fields replaced: `config.replace(fden={"way": 20}, seed=3)`."""
    updates = {}
    for name, value in sections.items():
      current = getattr(self, name)
      if dataclasses.is_dataclass(current) and isinstance(value, dict):
        value = dataclasses.replace(current, **value)
      updates[name] = value
    return dataclasses.replace(self, **updates)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "Config":
    return cls(data=DataConfig(**d["data"]), ali=ALIConfig(**d["ali"]), fden=FDENConfig(**d["fden"]),
               **{k: v for k, v in d.items() if k not in ("data", "ali", "fden")})


def paper() -> Config:
  """The paper's Omniglot recipe (Appendix B; 1,000 epochs of 10,000 episodes is 625,000 steps of 16), for a
  GPU. Not run yet (no GPU in these sessions)."""
  return Config(ali=ALIConfig(latent_dim=256, steps=100_000),
                fden=FDENConfig(steps=625_000))


# The factorization levers beyond the paper as `cpu` and `flowers_cpu` take them: FDEN on globally
# standardized codes, so the weights of the terms measured in z (alpha, identity swap, clean decoding) are
# for codes of unit spread (docs/results.md, fourth ladder; L_R's alpha was 0.2 there). Each preset adds its
# own style_dim and alpha (cpu 0.4, flowers_cpu 0.8: fifth ladder and the flowers section).
_STANDARDIZED_LEVERS = dict(standardize_latents=True, standardization="global",
                            identity_swap_weight=0.07, style_bottleneck_weight=0.1,
                            clean_decoding_weight=0.07)


def cpu() -> Config:
  """Default main job: `python scripts/train.py` on glyphs, within 15 minutes on a 2-core CPU.

  Deviations from the paper, all for time: ALI width 1/4, latent 64, batch 64, lr 2e-4, 1,500 steps; FDEN
  widths 1/2, lr 1e-3, 6,000 steps (3,000 until 2026-12-08: three FDEN seeds on one ALI gave f_ide 95.52%
  against 93.67%, translation 0.33 / 0.20 against 0.32 / 0.20, docs/results.md, fourteenth ladder). ALI
  gets Appendix B.2's reconstruction term so its encoder is usable after minutes, not days. FDEN starts
  from TruncatedNormal(0, 0.05) without dropout: with Table 2's 0.001 its gradients sit far below Adam's
  epsilon and a 1,500-step run stayed at chance (measured; docs/paper.md).

  Beyond ALI, so that it is trained as ALI: prior matching (MMD, weight 100) and instance noise 0.2 on D's
  pixels. Without them D wins outright (D(x, G_z(x)) = 1.000 from step 200) and prior samples decode to grey
  blobs (docs/results.md, "The discriminator's balance"). Since 2026-12-07 also the posterior means' first
  two moments pulled towards the prior's (weight 10): over three seeds f_sty -1.0 / -2.6 / -0.3 points,
  translation +0.07 / +0.06 / -0.03 (MSE score), reconstruction 0.0094 against 0.0120 (docs/results.md,
  twelfth ladder).

  Beyond the paper, for the factorization half, each measured in docs/results.md (third to eighth ladders):
  FDEN on globally standardized codes (one scale for every coordinate), f_sty of 8 coordinates (glyphs have 6
  style factors), the within-class identity swap (0.07), the style bottleneck (0.1) and clean decoding (0.07),
  L_R at alpha 0.4 (the weights of terms measured in z are for codes of unit spread), the codes of 2 jittered
  copies of each training image, FDEN's rate decaying on a half cosine, 2,000 steps of Entangler refit, and
  since 2026-12-07 the neutral style at 0.3 (A's identity decoded with f_sty = 0 asked for the mean code of
  A's class; three FDEN seeds on one ALI: translation 0.28 / 0.17 against 0.22 / 0.13 on average, f_sty
  24.57% against 25.02%: thirteenth ladder).

  Measured (2-core Intel Xeon VM, family 6 model 167, 2026-12-08, 5 min 19 s alone): 5-way 1-shot from
  f_ide 95.14%, from f_sty 25.28% (the 25% target missed by 0.28, within its CI), ||z - z~||^2/||z||^2
  0.022, G(z~) vs G(z) 0.10x ALI's own reconstruction error, translation score 0.33 / 0.21 (MSE / SSIM; the
  0.5 / 0.3 target is missed), D 0.96 / 0.03, prior-sample score 0.0034. With 3,000 FDEN steps on the AMD
  EPYC VM (2026-12-07): 93.56%, 24.16%, 0.30 / 0.18. How each number got there: docs/results.md and
  CHANGELOG.md."""
  return Config(ali=ALIConfig(width=0.25, latent_dim=64, batch_size=64, steps=1500, learning_rate=2e-4,
                              reconstruction_weight=1.0, prior_matching_weight=100.0, instance_noise=0.2,
                              prior_moment_weight=10.0, checkpoint_every=500),
                fden=FDENConfig(hidden_scale=0.5, steps=6000, learning_rate=1e-3, init_stddev=0.05,
                                dropout=0.0, checkpoint_every=1000, style_dim=8, alpha=0.4, cache_jitters=2,
                                entangler_refit_steps=2000, learning_rate_schedule="cosine",
                                neutral_style_weight=0.3, **_STANDARDIZED_LEVERS))


def smoke() -> Config:
  """Short end-to-end runs for tests (about 2 minutes of CPU time on 2 cores: 1 min 49 s measured, 4 min 31 s
  wall on a busy machine); accuracy only needs to beat chance."""
  return Config(data=DataConfig(glyphs_classes=220, glyphs_test_classes=20, glyphs_samples_per_class=10),
                ali=ALIConfig(width=0.125, latent_dim=32, batch_size=32, steps=200, learning_rate=1e-3,
                              reconstruction_weight=1.0, checkpoint_every=1000),
                fden=FDENConfig(hidden_scale=0.25, steps=300, learning_rate=1e-3, eval_episodes=200,
                                episodes_per_batch=8, init_stddev=0.05, dropout=0.0),
                log_every=50, metrics_samples=200, metrics_mine_steps=50, metrics_translation_pairs=50)


def omniglot_cpu() -> Config:
  """benchmarks/omniglot.py on a 2-core CPU (Table 1 within two hours): the cpu preset's ALI recipe on real
  Omniglot (Vinyals split, 96,000 training images), with the paper code's latent size 128 and ALI for 40,000
  steps (27 epochs; 32,000 gave 0.81 points less at 20-way 1-shot, 24,000, 16,000, 12,000 and 8,000 less
  again). The benchmark sets each setting's task (way, shot, test queries).

  FDEN keeps the paper's losses (the cpu preset's factorization levers gave 92.06% at 5w1s and f_sty 28.49%
  here, docs/results.md), with, each measured in docs/results.md:
  - alpha = 0.1 (Table 2: 1): the trained ALI's codes are large (||z - z~||^2 starts near 25), so with alpha
    = 1 L_R's gradient swamps L_C's in the Disentangler (77.6% against 86.8% at 5w1s after 6,000 steps);
  - training episodes of 60-way 1-shot with 1 query, 5 a step, for every setting, so the three settings share
    one FDEN (Prototypical Networks' "higher way": 20-way 1-shot 77.7% -> 79.6% against 20-way training);
  - the codes of 2 jittered copies of each training image, f_sty of 16 coordinates, 2,000 steps of Entangler
    refit (fidelity), and 30,000 steps at a rate decaying on a half cosine (FDEN still improved at 15,000).

  Measured (2-core Intel Xeon VM, 2026-12-07, runs/omni_b40k: the benchmark's 16,000-step ALI trained on to
  24,000, 32,000 and then 40,000 steps, byte for byte what a run from scratch gives; about 131 min of stages,
  most of them sharing the cores; about 80 alone at the rates measured alone): f_ide 96.48 / 99.24 / 89.32% on
  5w1s / 5w5s / 20w1s (paper 88.3 / 95.4 / 82.6), f_sty 22.58% at 5w1s, ||z - z~||^2/||z||^2 0.017, pixel
  ratio 0.12, D 0.74 / 0.26, prior-sample score 0.0002. Lake's protocol (--split=lake --train_rotations,
  20-way; runs/lake40k, the same way): 86.87%. How each number got there: docs/results.md."""
  return Config(data=DataConfig(dataset="omniglot"),
                ali=ALIConfig(width=0.25, latent_dim=128, batch_size=64, steps=40_000, learning_rate=2e-4,
                              reconstruction_weight=1.0, prior_matching_weight=100.0, instance_noise=0.2,
                              checkpoint_every=1000),
                fden=FDENConfig(hidden_scale=0.5, steps=30_000, learning_rate=1e-3, init_stddev=0.05,
                                dropout=0.0, alpha=0.1, train_way=60, train_shot=1, train_query=1,
                                episodes_per_batch=5, cache_jitters=2, style_dim=16,
                                entangler_refit_steps=2000, learning_rate_schedule="cosine",
                                checkpoint_every=5000))


def omniglot_paper() -> Config:
  """benchmarks/omniglot.py at the paper's scale, for a GPU: ALI's SVHN model at full width, latent 128 (the
  paper's code) for 100 epochs of the 96,000 training images, FDEN per Table 2 for 1,000 epochs of 10,000
  episodes. Not run yet (no GPU in these sessions)."""
  return Config(data=DataConfig(dataset="omniglot"),
                ali=ALIConfig(latent_dim=128, steps=96_000, reconstruction_weight=1.0, checkpoint_every=5000),
                fden=FDENConfig(steps=625_000, checkpoint_every=10_000))


def flowers_cpu() -> Config:
  """`python scripts/train.py --dataset=oxford_flowers102 --data_dir=../shared/data/oxford_flowers102` (the
  dataset's preset when --preset is not given) on a 2-core CPU, within 45 minutes: Oxford Flowers 102 as
  64x64 RGB, species split 82 train / 20 unseen test (seeded), ALI's CelebA model (the paper's choice for
  flowers) narrowed to width 1/8, latent 64 (the 64 channels of its last encoder layer at that width: a code
  of 128 spans 64 dimensions at most, and half of every prior draw fell where no flower is encoded), with
  Appendix B.2's l2 reconstruction term as the paper did for flowers, for 4,500 steps (42.8 epochs; at
  3,000 f_ide was 42.86% on the same ALI trajectory, at 4,500 50.38%, at 6,000 49.36%, which takes the
  command near its 45 minutes: docs/results.md); FDEN's hidden widths narrowed to 1/2 of Table 2's (Dim
  512 -> 256).

  Beyond ALI, so that it is trained as ALI: prior matching 100, instance noise 0.5, the discriminator's
  learning rate at 0.1x and the reconstruction term at 1/12 (the glyphs preset's per-pixel weight: 64x64x3 is
  12 times 32x32x1); each alone or in pairs still let D win (docs/results.md).

  FDEN: the cpu preset's recipe (globally standardized codes, identity swap, style bottleneck, clean
  decoding, Entangler refit) with f_sty of 32 coordinates, L_R at alpha 0.8 (takes identity out of f_sty on
  flowers: 27.4% -> 23.9%), 20-way training episodes and the codes of the mirrored training images (flowers
  keep their species in a mirror). FDEN's 1,500 steps are not a time cut: on 82 training species FDEN
  overfits beyond about 3,000 (docs/results.md).

  Measured (2-core Intel Xeon VM, 2026-12-07, 34 min 11 s sharing the cores with the test suite): 5-way
  1-shot on the 20 unseen species f_ide 49.16%, z 38.12%, raw pixels 37.64% (+11.0: the +10 target met),
  f_sty 22.60%, ||z - z~||^2/||z||^2 0.020, pixel ratio 0.03, D 0.71 / 0.25, prior-sample score 0.0075
  (0.011-0.021 with latent 128); 5-shot 63.08% (+7.4 over the pixels; 63.26-63.90% with latent 128). Round-
  off makes another ALI on each run (three runs with latent 128: 49.26-50.38%), so the 1-shot targets sit
  near their edge. How each number got there: docs/results.md."""
  return Config(data=DataConfig(dataset="oxford_flowers102", image_size=64, channels=3),
                ali=ALIConfig(architecture="celeba", width=0.125, latent_dim=64, batch_size=64, steps=4500,
                              learning_rate=2e-4, reconstruction_weight=1 / 12, prior_matching_weight=100.0,
                              instance_noise=0.5, discriminator_lr_factor=0.1, checkpoint_every=500),
                fden=FDENConfig(hidden_scale=0.5, steps=1500, learning_rate=1e-3, init_stddev=0.05,
                                dropout=0.0, style_dim=32, cache_mirrors=True, train_way=20, train_shot=1,
                                train_query=1, episodes_per_batch=8, checkpoint_every=1000, alpha=0.8,
                                entangler_refit_steps=2000, **_STANDARDIZED_LEVERS),
                metrics_samples=1000, metrics_mine_steps=300, metrics_translation_pairs=200)


def flowers_paper() -> Config:
  """Oxford Flowers 102 at the paper's scale, for a GPU: ALI's CelebA model at full width, latent 256, with
  Appendix B.2's l2 reconstruction term, 100 epochs of the 6,725 training-species images; FDEN per Table 2
  (Dim 512) for 100,000 steps of 16 episodes. Not run here (no GPU)."""
  return Config(data=DataConfig(dataset="oxford_flowers102", image_size=64, channels=3),
                ali=ALIConfig(architecture="celeba", latent_dim=256, steps=6800, reconstruction_weight=1.0,
                              checkpoint_every=1000),
                fden=FDENConfig(steps=100_000, checkpoint_every=10_000))


def load(run_dir: str) -> Config:
  """`<run_dir>/config.json` as a Config. Keys this version no longer knows are dropped and missing ones
  take their defaults, so runs written by older versions stay readable."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{run_dir} has no config.json; is it an output directory of scripts/train.py?")
  with open(path) as f:
    saved = json.load(f)
  known = lambda cls, d: {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
  sections = {"data": DataConfig, "ali": ALIConfig, "fden": FDENConfig}
  top = known(Config, {k: v for k, v in saved.items() if k not in sections})
  return Config(**{name: cls(**known(cls, saved.get(name, {}))) for name, cls in sections.items()}, **top)


# Image size each ALI architecture takes (fden_tf/ali.py's ARCHITECTURES; a test keeps the two in step).
ARCHITECTURE_IMAGE_SIZE = {"svhn": 32, "celeba": 64}
# Channels of each architecture's last encoder layer at width 1, from which a 1x1 convolution makes the
# code: at width w the codes span at most round(w * this) dimensions (the same test keeps it in step).
ARCHITECTURE_CODE_FEATURES = {"svhn": 512, "celeba": 512}


def code_rank_bound(ali_config) -> int:
  """The most dimensions ALI's codes can span: the channels of its encoder's last layer at its width."""
  return max(1, int(round(ARCHITECTURE_CODE_FEATURES[ali_config.architecture] * ali_config.width)))

PRESETS = {"paper": paper, "cpu": cpu, "smoke": smoke, "omniglot_cpu": omniglot_cpu,
           "omniglot_paper": omniglot_paper, "flowers_cpu": flowers_cpu, "flowers_paper": flowers_paper}


def get(name: str) -> Config:
  try:
    return PRESETS[name]()
  except KeyError:
    raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
