"""fden_tf: FDEN (plug-in factorization for latent representation disentanglement) in TensorFlow 2 / Keras 3."""

import os

# oneDNN's CPU kernels. TensorFlow enables them by default only on CPUs with AVX-512; on this project's AVX2
# machine they make ALI's training step 1.5-1.8x faster (README, Performance). This takes effect when
# fden_tf is imported before TensorFlow (the scripts do); TF_ENABLE_ONEDNN_OPTS=0 keeps TensorFlow's own.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
