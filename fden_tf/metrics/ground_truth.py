"""Metrics against the ground truth only `glyphs` knows: every sample's true style vector and identity.

* style R^2: a ridge regression from a representation to the 6 true style factors, fitted on samples of the
  training classes and scored on the unseen test classes. From f_sty it should be high, from f_ide low.
* identity probe: a linear (multinomial logistic) probe's accuracy at naming the class of unseen-class
  samples, fitted on half of each class's samples and scored on the other half. From f_sty it should be
  near chance (1 / classes), from f_ide high.
* translation fidelity: for pairs (A, B) of different classes, the decoded translation
  G(E(f_ide^A, f_sty^B)) against the truth `glyphs.render(identity_A, style_B)`, as pixel MSE and SSIM,
  each put on a 0..1 scale between "no translation" (G(z_A), the reconstruction of A: 0) and the ceiling
  (G(encode(truth)), the plugged network's own reconstruction of the true target: 1). Two references that
  know every sample's class put the score in context: decoding A's class-mean code, and code arithmetic
  (A's class mean plus B's offset from its class mean).
* oracle translation: what a factorization that knew the truth would reach on the same pairs: an Entangler
  (an MLP) fit on the training classes to map (an identity code, the TRUE style vector) to z, then asked for
  (A's identity code, B's true style). With A's class-mean code as the identity it bounds what the plugged
  network's codes allow (benchmarks/translation_oracle.py); with FDEN's f_ide or f_sty in one slot it
  tells which factor falls short.

Linear probes give lower bounds: information a probe misses may still be there in non-linear form.
"""

import keras
import numpy as np
import tensorflow as tf
from sklearn import linear_model
from sklearn import metrics as sk_metrics
from sklearn import preprocessing

from fden_tf import plugin
from fden_tf.data import glyphs

RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def style_r2(train_features: np.ndarray, train_styles: np.ndarray, test_features: np.ndarray,
             test_styles: np.ndarray, names=glyphs.STYLE_NAMES) -> dict:
  """R^2 of a ridge regression predicting styles [N, S] from features [N, D] (standardised).

  The ridge penalty is chosen by leave-one-out cross-validation on the training samples only. Returns
  {"mean": R^2 averaged over the S factors, "per_factor": {name: R^2}}; R^2 is 1 for exact prediction, 0
  for predicting the mean, negative for worse.
  """
  scaler = preprocessing.StandardScaler().fit(train_features)
  ridge = linear_model.RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(train_features), train_styles)
  predicted = ridge.predict(scaler.transform(test_features))
  per_factor = sk_metrics.r2_score(test_styles, predicted, multioutput="raw_values")
  return {"mean": float(per_factor.mean()),
          "per_factor": {name: float(r2) for name, r2 in zip(names, per_factor)}}


def half_split_per_class(labels: np.ndarray, seed: int) -> tuple:
  """Indices (fit, score) splitting every class's samples of labels [N] in half at random (>= 1 each)."""
  rng = np.random.default_rng(seed)
  fit, score = [], []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    half = max(1, len(members) // 2)
    fit.append(members[:half])
    score.append(members[half:])
  return np.concatenate(fit), np.concatenate(score)


def identity_probe(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
  """Held-out accuracy of a multinomial logistic regression naming the class of features [N, D].

  Fitted on half of each class's samples, scored on the other half; chance is 1 / number of classes.
  """
  fit, score = half_split_per_class(labels, seed)
  scaler = preprocessing.StandardScaler().fit(features[fit])
  probe = linear_model.LogisticRegression(max_iter=200).fit(scaler.transform(features[fit]), labels[fit])
  return float(probe.score(scaler.transform(features[score]), labels[score]))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Per-image SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of images [N, H, W, C] in [0, 1]
  (clipped first) -> float64 [N]; 1 for identical images. H and W must be >= 11."""
  clip = lambda x: tf.clip_by_value(tf.convert_to_tensor(x, tf.float32), 0.0, 1.0)
  return tf.image.ssim(clip(a), clip(b), max_val=1.0).numpy().astype(np.float64)


def normalised_score(value: float, none: float, ceiling: float):
  """(value - none) / (ceiling - none): 0 at "no translation", 1 at the ceiling, above 1 past it.

  Works for errors (lower is better) and similarities alike. None when the two references coincide.
  """
  span = ceiling - none
  return None if abs(span) < 1e-12 else float((value - none) / span)


def translation_scores(translated: np.ndarray, no_translation: np.ndarray, ceiling: np.ndarray,
                       target: np.ndarray, references=None) -> dict:
  """Pixel MSE and SSIM of each candidate against the true target, all [P, H, W, C], and the 0..1 scores.

  Returns {"mse": {...}, "ssim": {...}}, each with the mean over pairs of "translated", "no_translation",
  "ceiling" and of each of `references` (name -> images, e.g. "wrong_identity", the reconstruction of B:
  right style, wrong character), "score" = normalised_score(translated, no_translation, ceiling) computed on
  those means, and "<name>_score" for each reference on the same scale.
  """
  references = dict(references or {})
  candidates = {"translated": translated, "no_translation": no_translation, "ceiling": ceiling, **references}
  target = np.asarray(target, np.float64)
  out = {}
  for metric, fn in (("mse", lambda x: np.mean(np.square(np.asarray(x, np.float64) - target), (1, 2, 3))),
                     ("ssim", lambda x: ssim(x, target))):
    values = {name: float(np.mean(fn(images))) for name, images in candidates.items()}
    score = lambda name: normalised_score(values[name], values["no_translation"], values["ceiling"])
    values["score"] = score("translated")
    values.update({f"{name}_score": score(name) for name in references})
    out[metric] = values
  return out


def class_mean_codes(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Each sample's class mean of the codes z [N, D] (labels [N]) -> [N, D]."""
  classes, index = np.unique(labels, return_inverse=True)
  sums = np.zeros((len(classes), z.shape[1]), np.float64)
  np.add.at(sums, index, z)
  return (sums / np.bincount(index)[:, None])[index].astype(np.float32)


def translation_pairs(labels: np.ndarray, pairs: int, seed: int) -> tuple:
  """Index arrays (a, b) [pairs] into a split with labels [N]: random samples, label[a] != label[b]."""
  rng = np.random.default_rng(seed)
  a = rng.integers(len(labels), size=pairs)
  b = rng.integers(len(labels), size=pairs)
  while np.any(same := labels[a] == labels[b]):
    b[same] = rng.integers(len(labels), size=int(same.sum()))
  return a, b


def _translation_task(plugged, split, z: np.ndarray, pairs: int, seed: int) -> dict:
  """What every translation score of a glyphs split (codes z [N, Dim]) is measured on: the pairs (a, b),
  the true targets (A's identity in B's style), "no translation" (G(z_A)) and the ceiling (G(encode(truth)))
  as images, and `decode` (codes -> images through the plugged network)."""
  a, b = translation_pairs(split.labels, pairs, seed)
  target = glyphs.render(split.identities[split.labels[a]], split.styles[b], split.images.shape[1])
  target = target.astype(np.float32)
  decode = lambda codes: plugin.decode_all(plugged, codes)
  return dict(a=a, b=b, target=target, decode=decode, no_translation=decode(z[a]),
              ceiling=decode(plugin.encode_all(plugged, target)))


def translation_fidelity(plugged, model, split, z: np.ndarray, pairs: int, seed: int) -> dict:
  """Translation fidelity on `pairs` pairs of a glyphs split whose codes are z [N, Dim]."""
  task = _translation_task(plugged, split, z, pairs, seed)
  a, b, decode = task["a"], task["b"], task["decode"]
  f_ide_a, _ = model.disentangle(tf.convert_to_tensor(z[a]))
  _, f_sty_b = model.disentangle(tf.convert_to_tensor(z[b]))
  # References that know every sample's class, which FDEN does not: A's class-mean code (A's character in
  # an average style) and code arithmetic, A's class mean plus B's offset from its own class mean.
  means = class_mean_codes(z, split.labels)
  scores = translation_scores(
      translated=decode(model.entangle(f_ide_a, f_sty_b).numpy()), no_translation=task["no_translation"],
      ceiling=task["ceiling"], target=task["target"],
      references={"wrong_identity": decode(z[b]), "class_mean_of_a": decode(means[a]),
                  "class_mean_analogy": decode(means[a] + z[b] - means[b])})
  return {"pairs": int(pairs), **scores}


def has_ground_truth(split) -> bool:
  """True when a split carries per-sample true styles and per-class identities `glyphs.render` can draw."""
  return split.styles is not None and split.identities is not None


def fit_mlp(inputs: np.ndarray, targets: np.ndarray, steps: int, seed: int, width: int = 512):
  """An MLP (two hidden layers of `width`, leaky ReLU) fit to targets [N, T] from inputs [N, F] by Adam on
  mean squared error, batches of 256, the rate decaying linearly from 1e-3 to 0 over `steps`: the oracle
  Entanglers (inputs: factors, targets: z) and the style probe (inputs: z, targets: styles).
  Returns a function inputs [M, F] -> [M, T] (float32)."""
  keras.utils.set_random_seed(seed)
  mlp = keras.Sequential([keras.Input((inputs.shape[1],)), keras.layers.Dense(width, "leaky_relu"),
                          keras.layers.Dense(width, "leaky_relu"), keras.layers.Dense(targets.shape[1])])
  mlp.compile(keras.optimizers.Adam(keras.optimizers.schedules.PolynomialDecay(1e-3, steps, 0.0)), "mse")
  data = tf.data.Dataset.from_tensor_slices((inputs.astype(np.float32), targets.astype(np.float32)))
  mlp.fit(data.shuffle(len(targets), seed=seed).repeat().batch(256), steps_per_epoch=steps, epochs=1,
          verbose=0)
  return lambda x: mlp.predict(np.asarray(x, np.float32), batch_size=1000, verbose=0)


def standardise(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """x [N, F] per coordinate in the units of `reference` [M, F] (the training split): minus its mean,
  over its standard deviation."""
  return (x - reference.mean(0)) / (reference.std(0) + 1e-12)


def styles_read_from(z_train: np.ndarray, train_styles: np.ndarray, z_test: np.ndarray, steps: int,
                     seed: int) -> tuple:
  """The true styles as an MLP reads them from the codes: `fit_mlp` from z (standardised per coordinate
  with the training split's statistics) to the styles (likewise standardised), fit on the training split.
  Returns its (train [N_train, S], test [N_test, S]) predictions, in the standardised units of the training
  split's styles: `oracle_translation`'s "true" units. What the test predictions miss of the truth is
  style that no factorization of these codes can hand to an Entangler for unseen classes, however it is
  trained (within what such an MLP finds)."""
  inputs = standardise(z_train, z_train)
  probe = fit_mlp(inputs, standardise(train_styles, train_styles), steps, seed)
  return probe(inputs), probe(standardise(z_test, z_train))


def oracle_translation(plugged, train, test, z_train: np.ndarray, z_test: np.ndarray, identities: dict,
                       styles: dict, pairs: int, seed: int, steps: int = 6000) -> dict:
  """Translation scores of oracle Entanglers on the pairs `translation_fidelity` draws (same seed).

  train / test: glyphs splits; z_train / z_test: their codes. identities and styles: name -> (train
  [N_train, F], test [N_test, F]) features; every (identity, style) combination gets an Entangler fit on
  the training split. "true" in `styles` is added here: the true style vectors, standardised with the
  training split's statistics. Returns {"<identity>+<style>": {"fit_error": ||z - E||^2 / ||z||^2 on the
  test split's own combinations, "mse": score, "ssim": score}}.
  """
  styles = {"true": (standardise(train.styles, train.styles), standardise(test.styles, train.styles)), **styles}
  task = _translation_task(plugged, test, z_test, pairs, seed)  # translation_fidelity's pairs and scale
  a, b = task["a"], task["b"]
  out = {}
  for ide_name, (ide_train, ide_test) in identities.items():
    for sty_name, (sty_train, sty_test) in styles.items():
      entangle = fit_mlp(np.concatenate([ide_train, sty_train], 1), z_train, steps, seed)
      own = entangle(np.concatenate([ide_test, sty_test], 1))
      fit_error = float(np.sum(np.square(own - z_test)) / np.sum(np.square(z_test)))
      translated = task["decode"](entangle(np.concatenate([ide_test[a], sty_test[b]], 1)))
      scores = translation_scores(translated, task["no_translation"], task["ceiling"], task["target"])
      out[f"{ide_name}+{sty_name}"] = {"fit_error": fit_error, "mse": scores["mse"]["score"],
                                       "ssim": scores["ssim"]["score"]}
  return out
