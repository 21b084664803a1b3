"""Independence of the factors: how much f_ide and f_sty still tell about each other.

Two opinions, each beside the same number for the two halves of the raw code z (a split nobody trained to be
independent):

* mutual information in nats from a *fresh* Donsker-Varadhan statistician (`mutual_information.estimate`)
  trained after FDEN on held-out samples: the statistician FDEN trained against was fought by the
  Disentangler, so its own figure says little. The DV bound is a lower bound that a finite critic also
  overfits, so the same estimator on deliberately shuffled (independent) pairs is reported as its floor.
* the bias-corrected distance correlation (Szekely & Rizzo 2013), closed form, no training: 0 in expectation
  for independent variables whatever their dimension, 1 for x against itself. Distance covariance is HSIC
  with the distance-induced kernel (Sejdinovic et al. 2013), so this is also the HSIC-family opinion.
"""

import numpy as np

from fden_tf import mutual_information


def standardise(x: np.ndarray) -> np.ndarray:
  """Per-column z-scores of x [N, D] (constant columns stay 0): the critic's Adam steps see unit scales."""
  x = np.asarray(x, np.float64)
  std = x.std(axis=0)
  return ((x - x.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)).astype(np.float32)


def split_halves(z: np.ndarray) -> tuple:
  """The baseline pair: z [N, Dim] -> (z[:, :Dim // 2], z[:, Dim // 2:])."""
  half = z.shape[1] // 2
  return z[:, :half], z[:, half:]


def dv_mutual_information(a: np.ndarray, b: np.ndarray, steps: int, seed: int) -> float:
  """Fresh-statistician DV estimate of I(a; b) in nats for paired samples a [N, Da], b [N, Db].

  The estimator's own recipe (batch 256, learning rate 1e-3; tests/test_mutual_information.py checks it
  against the analytic MI of correlated Gaussians at 600 steps). The bound is evaluated on all N pairs, the
  same pairs the statistician trained on: it overfits them a little, hence the shuffled floor in
  `factor_independence`. A DV bound grows with training, so figures compare only at equal steps and N.
  """
  return mutual_information.estimate(standardise(a), standardise(b), steps=steps, seed=seed,
                                     batch_size=min(256, len(a)), eval_size=len(a))


def _pairwise_distances(x: np.ndarray) -> np.ndarray:
  """Euclidean distance matrix float64 [N, N] of rows of x [N, D] (via the Gram matrix: O(N^2) memory)."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  sq = np.einsum("ij,ij->i", x, x)
  d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
  return np.sqrt(np.maximum(d2, 0.0))


def _u_centre(d: np.ndarray) -> np.ndarray:
  """U-centring of a distance matrix [N, N] (Szekely & Rizzo 2014, Eq. 2.2): unbiased, zero diagonal."""
  n = len(d)
  rows = d.sum(axis=1)
  u = d - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + rows.sum() / ((n - 1) * (n - 2))
  np.fill_diagonal(u, 0.0)
  return u


def distance_correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Bias-corrected squared distance correlation R*(a, b) of paired samples a [N, Da], b [N, Db], N >= 4.

  Unlike the plain (V-statistic) distance correlation, which is well above 0 for independent samples in
  high dimension, this estimate is centred on 0 under independence (it can be slightly negative) and is 1
  when b is a rotation and scaling of a. Cost: O(N^2) memory and time.
  """
  if len(a) != len(b) or len(a) < 4:
    raise ValueError(f"need N >= 4 paired samples, got {len(a)} and {len(b)}")
  ua, ub = _u_centre(_pairwise_distances(a)), _u_centre(_pairwise_distances(b))
  # The 1 / (N (N - 3)) of the unbiased inner product cancels in the ratio.
  ab, aa, bb = (ua * ub).sum(), (ua * ua).sum(), (ub * ub).sum()
  if aa <= 0.0 or bb <= 0.0:
    return 0.0  # a constant variable is independent of everything
  return float(ab / np.sqrt(aa * bb))


def factor_independence(f_ide: np.ndarray, f_sty: np.ndarray, z: np.ndarray, mine_steps: int, seed: int,
                        dcor_samples: int = 2000) -> dict:
  """MI (nats) and distance correlation of (f_ide, f_sty) [N, Dim] each, beside the halves of z [N, Dim].

  MI uses all N samples (more samples, less overfitting); distance correlation, O(N^2) in memory, the first
  `dcor_samples` (pass them in random order). "f_ide_vs_shuffled_f_sty" pairs f_ide with the f_sty of a
  random other sample, independent by construction: its MI is the estimator's floor at this N and dimension,
  what it reports for no dependence at all.
  """
  z_a, z_b = split_halves(z)
  shuffled = f_sty[np.random.default_rng(seed).permutation(len(f_sty))]
  m = min(dcor_samples, len(z))
  return {
      "mi_samples": int(len(z)), "mine_steps": int(mine_steps), "dcor_samples": int(m),
      "mutual_information_nats": {
          "f_ide_vs_f_sty": dv_mutual_information(f_ide, f_sty, mine_steps, seed),
          "z_halves": dv_mutual_information(z_a, z_b, mine_steps, seed),
          "f_ide_vs_shuffled_f_sty": dv_mutual_information(f_ide, shuffled, mine_steps, seed)},
      "distance_correlation": {
          "f_ide_vs_f_sty": distance_correlation(f_ide[:m], f_sty[:m]),
          "z_halves": distance_correlation(z_a[:m], z_b[:m])},
  }
