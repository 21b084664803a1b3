import dataclasses

import pytest

from fden_tf import config as config_lib


@pytest.mark.parametrize("name", sorted(config_lib.PRESETS))
def test_presets_round_trip_through_json(name):
  config = config_lib.get(name)
  assert config_lib.Config.from_dict(config.to_dict()) == config


def test_paper_preset_is_table2():
  f = config_lib.paper().fden
  assert (f.dropout, f.leaky_slope, f.init_stddev, f.learning_rate, f.beta_1, f.beta_2) == \
      (0.2, 0.01, 0.001, 1e-4, 0.5, 0.999)
  assert (f.alpha, f.beta, f.gamma, f.episodes_per_batch, f.hidden_scale) == (1.0, 1.0, 0.5, 16, 1.0)
  a = config_lib.paper().ali
  assert (a.architecture, a.latent_dim, a.width, a.batch_size, a.learning_rate) == ("svhn", 256, 1.0, 100, 1e-4)


def test_replace_updates_sections_and_is_frozen():
  config = config_lib.cpu().replace(fden={"way": 20}, seed=3)
  assert config.fden.way == 20 and config.seed == 3 and config.ali == config_lib.cpu().ali
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.seed = 4


def test_unknown_preset():
  with pytest.raises(ValueError, match="unknown preset"):
    config_lib.get("huge")


def test_training_episodes_default_to_the_task_and_can_differ():
  task = config_lib.FDENConfig(way=5, shot=1, query=5)
  assert task.training_episode == (5, 1, 5)
  assert dataclasses.replace(task, train_way=20, train_query=1).training_episode == (20, 1, 1)
  assert dataclasses.replace(task, train_shot=5).training_episode == (5, 5, 5)
