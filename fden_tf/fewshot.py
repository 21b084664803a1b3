"""Few-shot evaluation by nearest prototype, vectorised over episodes (Section 5.3's protocol)."""

import math

import numpy as np
import tensorflow as tf

from fden_tf import losses
from fden_tf.data import episodes as episodes_lib


def evaluate(embeddings, sampler: episodes_lib.EpisodeSampler, num_episodes: int, seed: int,
             chunk: int = 250) -> dict:
  """Accuracy of nearest-prototype classification on `num_episodes` episodes drawn by `sampler`.

  embeddings: [N, D], one row per sample of the sampler's split (f_ide, or z and f_sty as baselines).
  Returns {"way", "shot", "query", "episodes", "accuracy", "ci95"}: the mean episode accuracy and the half
  width of its 95% confidence interval, 1.96 * std / sqrt(episodes).
  """
  embeddings = tf.convert_to_tensor(embeddings, tf.float32)
  per_episode = []
  for start in range(0, num_episodes, chunk):
    n = min(chunk, num_episodes - start)
    per_episode.append(_episode_accuracies(embeddings, sampler, tf.constant([seed, start], tf.int64), n))
  acc = np.concatenate(per_episode)
  std = acc.std(ddof=1) if len(acc) > 1 else 0.0
  return {"way": sampler.way, "shot": sampler.shot, "query": sampler.query, "episodes": int(num_episodes),
          "accuracy": float(acc.mean()), "ci95": float(1.96 * std / math.sqrt(len(acc)))}


def _episode_accuracies(embeddings, sampler, seed, n):
  indices = sampler.sample(seed, n)  # [n, C, K + Q]
  support, query = episodes_lib.split_episode(tf.gather(embeddings, indices), sampler.shot)
  logits = losses.prototype_logits(support, query)
  correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), sampler.query_labels(n))
  return tf.reduce_mean(tf.cast(correct, tf.float32), axis=1).numpy()


def format_result(result: dict, name: str = "f_ide") -> str:
  return (f"{result['way']}-way {result['shot']}-shot accuracy from {name} on unseen classes: "
          f"{100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f}% "
          f"(95% CI, {result['episodes']} episodes, {result['query']} query per class)")
