"""fden_tf.layers: each fast layer against Keras's own with the same weights (outputs, gradients, moving
statistics), that its fast path is the one that ran, and that checkpoints of Keras-layered ALIs restore."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fden_tf import ali as ali_lib
from fden_tf import checkpoints
from fden_tf import layers


def _pair(fast_cls, keras_cls, input_shape, **kwargs):
  """A fast layer and Keras's, built on `input_shape`, with the same (random, non-trivial) weights."""
  fast, reference = fast_cls(**kwargs), keras_cls(**kwargs)
  fast.build(input_shape)
  reference.build(input_shape)
  rng = np.random.default_rng(0)
  for f, r in zip(fast.weights, reference.weights, strict=True):
    value = rng.uniform(0.5, 1.5, f.shape) if "variance" in f.path else rng.normal(0, 0.5, f.shape)
    f.assign(value.astype(np.float32))
    r.assign(value.astype(np.float32))
  return fast, reference


def _outputs_and_grads(layer, x, upstream, **call_kwargs):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, **call_kwargs)
    loss = tf.reduce_sum(y * upstream)
  return [y] + tape.gradient(loss, [x] + layer.trainable_weights)


def _assert_same(fast, reference, input_shape, **call_kwargs):
  x = tf.random.stateless_normal(input_shape, [1, 2]) * 2.0 + 0.5
  upstream = tf.random.stateless_normal(reference.compute_output_shape(input_shape), [3, 4])
  for got, want in zip(_outputs_and_grads(fast, x, upstream, **call_kwargs),
                       _outputs_and_grads(reference, x, upstream, **call_kwargs), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(tf.reduce_max(tf.abs(want))))
  for f, r in zip(fast.non_trainable_weights, reference.non_trainable_weights, strict=True):
    np.testing.assert_allclose(f, r, rtol=1e-5, atol=1e-6)


def _op_types(layer, input_shape, **call_kwargs):
  fn = tf.function(lambda x: layer(x, **call_kwargs))
  graph = fn.get_concrete_function(tf.TensorSpec(input_shape)).graph
  return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("shape", [(6, 5, 5, 3), (4, 1, 1, 8), (1, 1, 1, 3)])
def test_batch_norm_training_matches_keras_through_the_fused_kernel(shape):
  fast, reference = _pair(layers.BatchNormalization, keras.layers.BatchNormalization, shape, momentum=0.9)
  _assert_same(fast, reference, shape, training=True)  # also the moving mean and (biased) variance
  assert "FusedBatchNormV3" in _op_types(fast, shape, training=True)


@pytest.mark.parametrize("shape, training", [((6, 5, 5, 3), False), ((8, 3), True)])
def test_batch_norm_uses_keras_path_for_inference_and_vectors(shape, training):
  fast, reference = _pair(layers.BatchNormalization, keras.layers.BatchNormalization, shape)
  _assert_same(fast, reference, shape, training=training)
  assert "FusedBatchNormV3" not in _op_types(fast, shape, training=training)


def test_synchronized_batch_norm_keeps_keras_path():
  fast = layers.BatchNormalization(synchronized=True)
  fast.build((4, 3, 3, 2))
  assert "FusedBatchNormV3" not in _op_types(fast, (4, 3, 3, 2), training=True)


@pytest.mark.parametrize("kwargs, shape, matmul", [
    (dict(filters=4, kernel_size=1, use_bias=False), (3, 5, 5, 6), True),  # 1x1 kernel
    (dict(filters=4, kernel_size=3, use_bias=True), (3, 3, 3, 6), True),  # kernel covers the input
    (dict(filters=4, kernel_size=3, use_bias=True), (3, 5, 5, 6), False),  # any other: Keras's kernel
    (dict(filters=4, kernel_size=3, strides=2, use_bias=False), (3, 3, 3, 6), False),
])
def test_conv2d_matches_keras(kwargs, shape, matmul):
  fast, reference = _pair(layers.Conv2D, keras.layers.Conv2D, shape, padding="valid", **kwargs)
  _assert_same(fast, reference, shape)
  ops = _op_types(fast, shape)
  assert ("Conv2D" not in ops and "MatMul" in ops) if matmul else "Conv2D" in ops


@pytest.mark.parametrize("kwargs, shape, matmul", [
    (dict(filters=5, kernel_size=4, use_bias=False), (3, 1, 1, 6), True),  # from a single pixel
    (dict(filters=5, kernel_size=(2, 3), use_bias=True), (3, 1, 1, 6), True),
    (dict(filters=5, kernel_size=4, strides=2, use_bias=True), (3, 3, 3, 6), False),
])
def test_conv2d_transpose_matches_keras(kwargs, shape, matmul):
  fast, reference = _pair(layers.Conv2DTranspose, keras.layers.Conv2DTranspose, shape, padding="valid",
                          **kwargs)
  _assert_same(fast, reference, shape)
  assert ("Conv2DBackpropInput" not in _op_types(fast, shape)) == matmul


def test_checkpoint_of_a_keras_layered_ali_restores(tmp_path, monkeypatch):
  """Runs trained before fden_tf.layers (Keras's layers) load into today's ALI and decode the same."""
  monkeypatch.setattr(ali_lib, "layers", layers.KERAS_LAYERS)
  old = ali_lib.ALI("svhn", latent_dim=8, width=0.0625)
  monkeypatch.undo()
  for i, v in enumerate(old.variables):  # trained-looking values: none at its initial value
    v.assign(tf.random.stateless_normal(v.shape, [i, 7]) * 0.1 + (1.0 if "variance" in v.path else 0.0))
  path = checkpoints.checkpoint(ali=old).save(str(tmp_path / "ckpt"))
  new = ali_lib.ALI("svhn", latent_dim=8, width=0.0625)
  assert any(isinstance(layer, layers.BatchNormalization) for layer in new.encoder._flatten_layers())
  checkpoints.restore(checkpoints.checkpoint(ali=new), path).assert_consumed()
  z = tf.random.stateless_normal([2, 8], [5, 6])
  x = tf.random.stateless_uniform([2, 32, 32, 1], [7, 8])
  np.testing.assert_allclose(new.decode(z), old.decode(z), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.encode(x), old.encode(x), rtol=1e-5, atol=1e-6)
