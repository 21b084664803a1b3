"""C-way K-shot episode sampling, inside the TensorFlow graph and from stateless seeds.

Stateless sampling makes an episode a pure function of (seed, step): a run that resumes at step s draws the
same episodes as one that never stopped, and the sampler can live inside a compiled train step.
"""

import numpy as np
import tensorflow as tf

from fden_tf.data import split


class EpisodeSampler:
  """Draws episodes from the classes of one split.

  An episode is an int32 tensor of sample indices [C, K + Q]: C distinct classes (the episode's classes
  0..C-1 in that order), and for each class K support samples followed by Q query samples, all distinct.
  """

  def __init__(self, labels: np.ndarray, way: int, shot: int, query: int, split_name: str = "this split"):
    labels = np.asarray(labels)
    counts = split.check_episode_shape(labels, way, shot, query, split_name)
    num_classes = len(counts)
    self.way, self.shot, self.query = way, shot, query
    self.num_classes = num_classes
    # Class-major index table [num_classes, max_count], padded with 0 where a class has fewer samples;
    # padding is never drawn because its sort keys are forced below every real one.
    order = np.argsort(labels, kind="stable")
    table = np.zeros((num_classes, counts.max()), np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in range(num_classes):
      table[c, :counts[c]] = order[starts[c]:starts[c] + counts[c]]
    self._table = tf.constant(table)
    self._counts = tf.constant(counts, tf.int32)

  def sample(self, seed, episodes: int):
    """seed: int [2] tensor (a stateless seed). Returns int32 indices [episodes, C, K + Q]."""
    class_seed, sample_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    class_keys = tf.random.stateless_uniform([episodes, self.num_classes], class_seed)
    classes = tf.math.top_k(class_keys, self.way).indices  # [E, C], distinct by construction
    max_count = tf.shape(self._table)[1]
    sample_keys = tf.random.stateless_uniform([episodes, self.way, max_count], sample_seed)
    valid = tf.range(max_count)[None, None, :] < tf.gather(self._counts, classes)[..., None]
    sample_keys = tf.where(valid, sample_keys, -1.0)
    positions = tf.math.top_k(sample_keys, self.shot + self.query).indices  # [E, C, K + Q]
    rows = tf.gather(self._table, classes)  # [E, C, max_count]
    return tf.gather(rows, positions, batch_dims=2)

  def query_labels(self, episodes: int):
    """Episode-local labels of the queries in the order `split_episode` returns them: int32 [E, C * Q]."""
    labels = tf.repeat(tf.range(self.way, dtype=tf.int32), self.query)
    return tf.tile(labels[None], [episodes, 1])


def split_episode(embeddings, shot: int):
  """[E, C, K + Q, D] -> support [E, C, K, D] and queries [E, C * Q, D] (class-major)."""
  support = embeddings[:, :, :shot]
  query = embeddings[:, :, shot:]
  e, c, q, d = tf.unstack(tf.shape(query))
  return support, tf.reshape(query, [e, c * q, d])


def same_class_partner(rows, episodes: int, way: int, per_class: int):
  """rows [E * C * (K + Q), D] in episode order (`EpisodeSampler.sample` flattened) -> the row of each
  sample's class-mate: the next sample of the same class in the same episode, cyclically (K + Q >= 2, so
  never the sample itself)."""
  grouped = tf.reshape(rows, [episodes, way, per_class, -1])
  return tf.reshape(tf.roll(grouped, shift=1, axis=2), tf.shape(rows))
