"""Keras layers that compute what Keras's own compute, with faster kernels where the shapes allow.

Drop-in subclasses for ALI's networks (issue #8, item 4: `benchmarks/ali_profile.py` showed where its CPU
step went). Each has the parent's weights, names and checkpoint layout, takes the parent's path whenever
its own does not apply, and agrees with it to float32 round-off (`tests/test_layers.py`):

* `BatchNormalization`: in training mode, the statistics, normalisation and their gradients come from
  TensorFlow's fused kernel (one `FusedBatchNormV3` op and one gradient op) instead of Keras's moments,
  subtractions and broadcasts: 2 to 4 times faster on the CPU for ALI's feature maps. Synchronized
  (multi-replica) batch norm, renormalisation, masks, other ranks and non-float32 inputs use Keras's path.
* `Conv2D`: a convolution whose kernel is 1x1, or covers its whole (valid, stride-1) input, is one matrix
  product; written as one it runs 2 to 3 times faster on the CPU than the convolution kernels at ALI's
  sizes (ALI's last encoder and discriminator convolutions, its 1x1 layers).
* `Conv2DTranspose`: a transposed convolution of a 1x1 input (ALI's first generator layer) is one matrix
  product too.
"""

import types

import keras
import tensorflow as tf


class BatchNormalization(keras.layers.BatchNormalization):
  """`keras.layers.BatchNormalization` with training-mode statistics from TensorFlow's fused kernel."""

  def call(self, inputs, training=None, mask=None):
    if not (training and self.trainable and self._fusable(inputs, mask)):
      return super().call(inputs, training=training, mask=mask)
    y, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=self.gamma, offset=self.beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
        epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    # The fused op returns the batch variance with Bessel's correction; Keras averages the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), inputs.dtype)
    variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
    for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
      moving.assign(moving * self.momentum + tf.stop_gradient(value) * (1.0 - self.momentum))
    return y

  def _fusable(self, inputs, mask):
    return (mask is None and not self.synchronized and not self.renorm and self.center and self.scale
            and inputs.shape.rank == 4 and self.axis in (-1, 3) and inputs.dtype == tf.float32
            and self.compute_dtype == "float32" and self.moving_mean.dtype == tf.float32)


def _plain(layer) -> bool:
  """Stride 1, no dilation or groups, channels last, valid padding: the cases written as matmuls."""
  return (tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
          and getattr(layer, "groups", 1) == 1 and layer.data_format == "channels_last"
          and layer.padding == "valid")


class Conv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D`; a 1x1 kernel, or one that covers the whole input, runs as a matrix product."""

  def convolution_op(self, inputs, kernel):
    kh, kw, cin, cout = kernel.shape
    height, width = inputs.shape[1:3]
    if not _plain(self) or height is None or width is None:
      return super().convolution_op(inputs, kernel)
    if (kh, kw) == (height, width):  # one output position: a dense layer on the flattened input
      flat = tf.reshape(inputs, [-1, kh * kw * cin])
      return tf.reshape(flat @ tf.reshape(kernel, [kh * kw * cin, cout]), [-1, 1, 1, cout])
    if (kh, kw) == (1, 1):  # the same dense layer at every position
      flat = tf.reshape(inputs, [-1, cin])
      return tf.reshape(flat @ tf.reshape(kernel, [cin, cout]), [-1, height, width, cout])
    return super().convolution_op(inputs, kernel)


class Conv2DTranspose(keras.layers.Conv2DTranspose):
  """`keras.layers.Conv2DTranspose`; from a 1x1 input it runs as a matrix product."""

  def call(self, inputs):
    if not (_plain(self) and self.output_padding is None and tuple(inputs.shape[1:3]) == (1, 1)):
      return super().call(inputs)
    kh, kw, cout, cin = self.kernel.shape  # Keras's transposed kernels are (h, w, out, in)
    # Output pixel (i, j) is kernel[i, j] applied to the single input pixel.
    weights = tf.reshape(tf.transpose(self.kernel, [3, 0, 1, 2]), [cin, kh * kw * cout])
    outputs = tf.reshape(tf.reshape(inputs, [-1, cin]) @ weights, [-1, kh, kw, cout])
    if self.use_bias:
      outputs = outputs + self.bias
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs


# Keras's own classes under the same names: `ali.layers = KERAS_LAYERS` builds an ALI as it was before this
# module, for comparisons (tests, benchmarks/ali_profile.py --keras_layers).
KERAS_LAYERS = types.SimpleNamespace(Conv2D=keras.layers.Conv2D, Conv2DTranspose=keras.layers.Conv2DTranspose,
                                     BatchNormalization=keras.layers.BatchNormalization)
