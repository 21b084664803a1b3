"""Identity alignment: few-shot accuracy from f_ide, beside the raw code z and the style factor f_sty.

The paper's Section 5.3 protocol (nearest prototype, C-way K-shot episodes of unseen classes), run on the
same episodes for every representation so the numbers differ only by the representation. f_ide should
score high, well above z (FDEN's point); f_sty should score near chance (identity leaking into the style
factor: lower is better).
"""

import numpy as np

from fden_tf import fewshot
from fden_tf.data import episodes as episodes_lib


def fewshot_alignment(representations: dict, labels: np.ndarray, way: int, shot: int, query: int,
                      num_episodes: int, seed: int) -> dict:
  """Nearest-prototype accuracy of each representation on one shared set of episodes.

  representations: name -> [N, D_name] array, row i describing sample i of `labels` [N].
  Returns {"way", "shot", "query", "episodes", "chance", name: {"accuracy", "ci95"} for each name}; ci95 is
  the half-width of the 95% confidence interval over episodes.
  """
  sampler = episodes_lib.EpisodeSampler(labels, way, shot, query)
  out = {"way": way, "shot": shot, "query": query, "episodes": int(num_episodes), "chance": 1.0 / way}
  for name, embeddings in representations.items():
    result = fewshot.evaluate(np.asarray(embeddings, np.float32), sampler, num_episodes, seed)
    out[name] = {"accuracy": result["accuracy"], "ci95": result["ci95"]}
  return out
