"""Does the plugged generator's prior look like the data? A Fréchet distance in a small classifier's features.

FID (Heusel et al. 2017) compares Gaussians fitted to Inception features of real and generated images. There
is no Inception network offline, and Inception's ImageNet features say little about 32x32 glyphs, so the
feature network is a small CNN that this module trains on the training split's own classes; its penultimate
layer gives the features. Distances are only comparable with the same feature network, so every call
reports references beside the samples, all against the same held-out real images:

    real          another held-out set of real training images (≈ 0: the floor set by sampling)
    samples       G_x(z), z ~ N(0, I): the prior samples under test
    reconstructions  G_x(G_z(x)) of held-out images
    blurred       held-out images under a Gaussian blur (a plausible-but-wrong reference)
    noise         uniform noise images (a far reference)

`score` = FD(samples) / FD(noise): 0 would be indistinguishable from the data, about 1 as far as noise.
"""

import keras
import numpy as np
import tensorflow as tf

FEATURES = 64


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to features a [N, F], b [M, F].

  tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix, so
  symmetric eigendecompositions give it exactly (no complex matrix square root)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  w, v = np.linalg.eigh(s_a)
  root_a = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
  cross = np.sqrt(np.maximum(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0.0)).sum()
  return float(np.sum(np.square(mu_a - mu_b)) + np.trace(s_a) + np.trace(s_b) - 2.0 * cross)


def train_feature_network(images: np.ndarray, labels: np.ndarray, seed: int = 0, epochs: int = 3,
                          batch_size: int = 128):
  """A small CNN classifier of `labels` [N] from `images` [N, H, W, C]; returns features(images) -> [N, 64]
  (its penultimate, linear layer, inference mode)."""
  keras.utils.set_random_seed(seed)
  num_classes = int(labels.max()) + 1
  inputs = keras.Input(images.shape[1:])
  h = inputs
  for channels in (32, 64, 128):
    h = keras.layers.Conv2D(channels, 3, 2, "same", activation="relu")(h)
  h = keras.layers.GlobalAveragePooling2D()(h)
  # Linear features: with a ReLU here, every unit died on Omniglot's 4,800 classes (all features 0 for real
  # and noise images alike, so every distance was 0); a linear layer cannot die.
  features = keras.layers.Dense(FEATURES, name="features")(h)
  outputs = keras.layers.Dense(num_classes)(features)
  classifier = keras.Model(inputs, outputs)
  classifier.compile(keras.optimizers.Adam(1e-3),
                     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  classifier.fit(images, labels, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
  extractor = keras.Model(inputs, features)
  return lambda x: extractor.predict(np.asarray(x, np.float32), batch_size=500, verbose=0)


def blur(images: np.ndarray, sigma: float = 1.5) -> np.ndarray:
  """Separable Gaussian blur of images [N, H, W, C] (radius 3 sigma, edges replicated)."""
  radius = int(np.ceil(3 * sigma))
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  kernel /= kernel.sum()
  out = np.asarray(images, np.float32)
  for axis in (1, 2):
    padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(4)], mode="edge")
    out = sum(w * np.take(padded, np.arange(k, k + out.shape[axis]), axis=axis) for k, w in enumerate(kernel))
  return out.astype(np.float32)


def evaluate(decode, encode, latent_dim: int, images: np.ndarray, labels: np.ndarray, samples: int = 2000,
             seed: int = 0, features=None, posterior_variance=None) -> dict:
  """Fréchet distances of prior samples and references to held-out real images of the training split.

  decode: z [B, Dim] -> images; encode: images -> z (posterior mean). images, labels: the training split
  (the generator was trained on it). Two disjoint sets of `samples` images are held out from the feature
  network's training: one is the reference, the other the "real" row. features: a feature network from
  an earlier call with the same images, labels, samples and seed (`result["features"]` is not returned:
  use `feature_network_for`), so several generators are compared in the very same features.
  posterior_variance: images -> the encoder's per-coordinate posterior variance sigma^2 [B, Dim], for
  `thin_directions` (see there); without it the codes count as deterministic."""
  rng = np.random.default_rng(seed)
  reference, other, fit = _held_out_split(len(images), samples, rng)
  n = len(reference)
  features = features or train_feature_network(images[fit], labels[fit], seed=seed)
  ref = features(images[reference])
  z = rng.standard_normal((n, latent_dim)).astype(np.float32)
  batches = lambda fn, x: np.concatenate([np.asarray(fn(x[i:i + 500])) for i in range(0, len(x), 500)])
  codes = batches(encode, images[other])
  noise_variance = (batches(posterior_variance, images[other]).mean(axis=0) if posterior_variance is not None
                    else np.zeros(latent_dim))
  candidates = {
      "real": images[other],
      "samples": batches(decode, z),
      "reconstructions": batches(decode, codes),
      "blurred": blur(images[other]),
      "noise": rng.uniform(size=images[other].shape).astype(np.float32)}
  fd = {name: frechet_distance(features(x), ref) for name, x in candidates.items()}
  # A feature network that cannot tell noise from the data measures nothing: no score rather than a
  # division by zero after a long training.
  score = fd["samples"] / fd["noise"] if fd["noise"] > 1e-12 else float("nan")
  return {"frechet_distance": fd, "score": score, "samples": int(n),
          "code_span": {**code_span(codes, z), **thin_directions(codes, noise_variance, z)},
          "feature_network": f"CNN 32-64-128 (3x3, stride 2) -> {FEATURES} features, trained 3 epochs on "
                             f"{len(fit)} training images"}


def code_span(codes: np.ndarray, prior_draws: np.ndarray, tolerance: float = 1e-3) -> dict:
  """Where the prior puts codes that the encoder never does. `rank`: the dimension of the span of the
  (centred) codes, singular values above `tolerance` times the largest; `prior_energy_outside`: the share
  of the prior draws' squared norm outside that span (0 when the codes fill the latent space; about
  1 - rank / Dim for N(0, I) draws when they fill a subspace). An encoder whose last layer has fewer
  features than Dim codes a subspace only: the generator never learns the rest of the latent space from
  encoded images, and prior samples, partly outside it, do not look like the data."""
  centred = codes - codes.mean(axis=0)
  _, singular, basis = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
  basis = basis[singular > tolerance * singular[0]] if singular[0] > 0 else basis[:0]
  draws = prior_draws.astype(np.float64)
  outside = 1.0 - _energy_share(draws, basis.T) if np.any(draws) else 0.0
  return {"rank": int(len(basis)), "dim": int(codes.shape[1]), "prior_energy_outside": max(outside, 0.0)}


def thin_directions(codes: np.ndarray, noise_variance: np.ndarray, prior_draws: np.ndarray,
                    floor: float = 0.1) -> dict:
  """The latent directions in which the codes the generator is trained to reconstruct, z = mu + sigma * eps,
  vary less than `floor` times the prior's unit variance, and the share of prior draws' squared norm that
  falls in them. codes: the posterior means mu [N, Dim]; noise_variance: the mean of sigma^2 over the same
  images [Dim] (so the covariance of z is Cov(mu) + diag(noise_variance)). Prior draws put unit variance in
  such a direction, which neither the codes nor their noise ever did: the generator learned its response
  there from the adversarial game alone (measured on flowers: those directions alone decode to textures)."""
  covariance = np.cov(codes.astype(np.float64), rowvar=False) + np.diag(noise_variance.astype(np.float64))
  variance, basis = np.linalg.eigh(covariance)
  thin = basis[:, variance < floor]
  return {"thin_directions": int(thin.shape[1]), "thin_floor": floor,
          "prior_energy_in_thin_directions": _energy_share(prior_draws.astype(np.float64), thin)}


def _energy_share(draws: np.ndarray, basis: np.ndarray) -> float:
  """The share of the draws' [N, Dim] squared norm in the span of `basis`' orthonormal columns [Dim, k] (0 for
  draws that are all zero)."""
  total = float(np.sum(draws ** 2))
  return float(np.sum((draws @ basis) ** 2)) / total if total > 0 else 0.0


def _held_out_split(num_images: int, samples: int, rng):
  """Indices (reference, other, fit): two disjoint held-out sets of min(samples, N / 4) images and the rest,
  on which the feature network trains."""
  n = min(samples, num_images // 4)
  order = rng.permutation(num_images)
  return order[:n], order[n:2 * n], order[2 * n:]


def feature_network_for(images: np.ndarray, labels: np.ndarray, samples: int = 2000, seed: int = 0):
  """The feature network `evaluate` trains for these arguments, to pass to several `evaluate` calls."""
  _, _, fit = _held_out_split(len(images), samples, np.random.default_rng(seed))
  return train_feature_network(images[fit], labels[fit], seed=seed)
