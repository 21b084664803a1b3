import numpy as np
import pytest
import tensorflow as tf

from fden_tf import fewshot
from fden_tf.data import episodes


def _labels(counts):
  labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
  return np.random.default_rng(0).permutation(labels)  # samples of a class need not be contiguous


@pytest.mark.parametrize("way,shot,query", [(5, 1, 1), (5, 5, 3), (20, 1, 4)])
def test_episodes_have_distinct_classes_and_disjoint_support_and_query(way, shot, query):
  labels = _labels([12] * 25 + [9] * 5)
  sampler = episodes.EpisodeSampler(labels, way, shot, query)
  idx = sampler.sample(tf.constant([3, 7], tf.int64), 50).numpy()
  assert idx.shape == (50, way, shot + query)
  for episode in idx:
    classes = labels[episode]  # [C, K + Q]
    assert (classes == classes[:, :1]).all(), "every sample of a row belongs to one class"
    assert len(set(classes[:, 0])) == way, "C distinct classes"
    assert len(set(episode.ravel())) == episode.size, "support and query samples are all distinct"
  # Episode-local labels of the queries match the row order.
  np.testing.assert_array_equal(sampler.query_labels(2).numpy()[0], np.repeat(np.arange(way), query))


def test_classes_come_only_from_the_split_asked_for():
  train_labels = _labels([10] * 8)
  test_labels = _labels([10] * 4)
  # Global sample ids: the sampler indexes its own split, so mapping through it gives only its classes.
  train_ids = np.arange(len(train_labels))
  sampler = episodes.EpisodeSampler(test_labels, 4, 2, 2)
  idx = sampler.sample(tf.constant([0, 0], tf.int64), 100).numpy()
  assert idx.max() < len(test_labels)
  assert set(test_labels[idx].ravel()) == set(range(4))
  sampler = episodes.EpisodeSampler(train_labels, 4, 2, 2)
  assert set(train_labels[sampler.sample(tf.constant([0, 1], tf.int64), 200).numpy()].ravel()) == set(range(8))
  del train_ids


def test_sampling_is_a_pure_function_of_the_seed_and_covers_all_samples():
  labels = _labels([6] * 10)
  sampler = episodes.EpisodeSampler(labels, 5, 1, 1)
  a = sampler.sample(tf.constant([1, 2], tf.int64), 20).numpy()
  b = sampler.sample(tf.constant([1, 2], tf.int64), 20).numpy()
  c = sampler.sample(tf.constant([1, 3], tf.int64), 20).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  seen = sampler.sample(tf.constant([9, 9], tf.int64), 400).numpy()
  assert set(seen.ravel()) == set(range(len(labels))), "every sample, none of the padding"


@pytest.mark.parametrize("kwargs,message", [(dict(way=11, shot=1, query=1), "larger than the 10 classes"),
                                            (dict(way=5, shot=4, query=3), "exceeds the 6 samples"),
                                            (dict(way=0, shot=1, query=1), "must be >= 1")])
def test_impossible_episodes_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    episodes.EpisodeSampler(_labels([6] * 10), **kwargs)


def test_the_smallest_class_is_named_by_its_folder_when_names_are_known():
  from fden_tf.data import split
  labels = _labels([6, 3, 6])
  with pytest.raises(ValueError, match=r"smallest class of the test split \(class 'daisy'\)"):
    split.check_episode_shape(labels, 2, 2, 2, "the test split", class_names=["rose", "daisy", "tulip"])
  with pytest.raises(ValueError, match=r"\(class 1\)"):  # names that are only the numbers: said once
    split.check_episode_shape(labels, 2, 2, 2, class_names=["0", "1", "2"])


def test_fewshot_evaluation_known_answers():
  labels = _labels([10] * 20)
  sampler = episodes.EpisodeSampler(labels, 5, 1, 2)
  perfect = np.eye(20, dtype=np.float32)[labels] * 10  # one-hot class embedding: always right
  result = fewshot.evaluate(perfect, sampler, 200, seed=0)
  assert result["accuracy"] == 1.0 and result["ci95"] == 0.0 and result["episodes"] == 200
  constant = np.zeros((len(labels), 4), np.float32)  # all tied: argmax picks class 0, right 1/5 of the time
  result = fewshot.evaluate(constant, sampler, 1000, seed=0)
  assert result["accuracy"] == pytest.approx(0.2, abs=1e-6)
  noise = np.random.default_rng(0).standard_normal((len(labels), 8)).astype(np.float32)
  result = fewshot.evaluate(noise, sampler, 1000, seed=0)
  assert abs(result["accuracy"] - 0.2) < 3 * result["ci95"] + 0.01
  assert 0.0 < result["ci95"] < 0.05
