"""Plug-in fidelity: the paper's claim that plugging FDEN in does not harm the original model.

FDEN never changes the plugged network's weights, so the only way it can harm the original task is through
z~, the code it hands back. Measured on held-out data:

* in code space, ||z - z~||^2 / ||z||^2 (and the same over the variance of z, i.e. 1 - R^2 of z~ for z);
* in pixel space, the decoder's image from z~ against its image from z, beside the decoder's own
  reconstruction error ||x - G(z)||^2, the error the plugged network already makes without FDEN.
"""

import numpy as np

from fden_tf import plugin


def latent_fidelity(z: np.ndarray, z_tilde: np.ndarray) -> dict:
  """Code-space error of the Disentangler-Entangler round trip, z and z~ [N, Dim].

  Returns {"relative_error": sum ||z - z~||^2 / sum ||z||^2, "unexplained_variance": sum ||z - z~||^2 /
  sum ||z - mean(z)||^2}: 0 for a perfect round trip; 1 for z~ = 0 (first) or z~ = mean(z) (second).
  """
  z, z_tilde = np.asarray(z, np.float64), np.asarray(z_tilde, np.float64)
  error = np.square(z - z_tilde).sum()
  return {"relative_error": float(error / max(np.square(z).sum(), 1e-30)),
          "unexplained_variance": float(error / max(np.square(z - z.mean(axis=0)).sum(), 1e-30))}


def pixel_fidelity(images: np.ndarray, from_z: np.ndarray, from_z_tilde: np.ndarray) -> dict:
  """Pixel MSEs (mean over pixels and samples) of images x, G(z) and G(z~), each [N, H, W, C].

  Returns {"z_tilde_vs_z": what plugging FDEN in changes in the decoded image, "z_tilde_vs_image": FDEN's
  round trip against the input, "reconstruction": the plugged network's own ||x - G(z)||^2}.
  """
  mse = lambda a, b: float(np.mean(np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
  return {"z_tilde_vs_z": mse(from_z_tilde, from_z), "z_tilde_vs_image": mse(from_z_tilde, images),
          "reconstruction": mse(from_z, images)}


def plugin_fidelity(plugged, images: np.ndarray, z: np.ndarray, z_tilde: np.ndarray) -> dict:
  """Both views for held-out images [N, H, W, C], their codes z and FDEN's z~ [N, Dim]."""
  pixels = pixel_fidelity(images, plugin.decode_all(plugged, z), plugin.decode_all(plugged, z_tilde))
  return {"samples": int(len(z)), "latent": latent_fidelity(z, z_tilde), "pixel_mse": pixels}
