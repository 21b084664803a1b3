import numpy as np
import pytest

from fden_tf import losses
from fden_tf import mutual_information


def _gaussians(rho, n=8000, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 1))
  y = rho * x + np.sqrt(1 - rho * rho) * rng.standard_normal((n, 1))
  return x.astype(np.float32), y.astype(np.float32)


def test_dv_estimator_lands_near_analytic_mi_of_correlated_gaussians():
  x, y = _gaussians(0.8)
  truth = losses.analytic_gaussian_mi(0.8)  # 0.511 nats
  estimate = mutual_information.estimate(x, y, steps=600)
  assert truth == pytest.approx(0.5108, abs=1e-3)
  assert estimate == pytest.approx(truth, abs=0.12)


def test_dv_estimator_near_zero_for_independent_gaussians():
  x, _ = _gaussians(0.0, seed=1)
  _, y = _gaussians(0.0, seed=2)
  estimate = mutual_information.estimate(x, y, steps=600)
  assert abs(estimate) < 0.06
