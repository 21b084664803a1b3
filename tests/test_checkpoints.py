import dataclasses

import numpy as np
import pytest

from fden_tf import ali as ali_lib
from fden_tf import checkpoints
from fden_tf import config as config_lib
from fden_tf import fden as fden_lib
from fden_tf import train_ali


def test_ali_training_updates_batch_norm_statistics_and_every_variable_round_trips(tmp_path):
  c = config_lib.smoke().ali
  model = ali_lib.ALI("svhn", c.latent_dim, 1, c.width)
  images = np.random.default_rng(0).uniform(size=(64, 32, 32, 1)).astype(np.float32)
  moving = [v for v in model.encoder.variables if "moving_variance" in v.path]
  before = [v.numpy().copy() for v in moving]
  train_ali.train(model, dataclasses.replace(c, steps=3), images, str(tmp_path), show_progress=False)
  assert all(not np.allclose(b, v.numpy()) for b, v in zip(before, moving)), "BN statistics must move"

  fresh = ali_lib.ALI("svhn", c.latent_dim, 1, c.width)
  train_ali.restore_trained(fresh, str(tmp_path))
  assert len(fresh.variables) == len(model.variables)
  for a, b in zip(model.variables, fresh.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = images[:4]
  np.testing.assert_allclose(fresh.encode(x).numpy(), model.encode(x).numpy(), atol=1e-6)


def test_restoring_into_another_architecture_fails_clearly(tmp_path):
  model = fden_lib.FDEN(8, hidden_scale=0.1)
  path = checkpoints.checkpoint(fden=model).save(str(tmp_path / "ckpt"))
  other = fden_lib.FDEN(16, hidden_scale=0.1)
  with pytest.raises(ValueError, match="does not fit this model"):
    checkpoints.restore(checkpoints.checkpoint(fden=other), path)
