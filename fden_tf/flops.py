"""Counting a step's floating-point operations from the shapes of its matmuls and convolutions.

A FLOP here is one multiply or one add: a multiply-accumulate counts 2. Only the ops that hold almost all of
a network's arithmetic are counted (matrix products and convolutions, forward and backward); element-wise
ops, reductions, batch norm and the optimizer's update are not, so the count is a slight underestimate of
the work and a fair numerator for "fraction of the machine's matmul rate".

`layer_flops` counts one Keras layer's forward pass from its configuration and input shape (the hand count);
`graph_flops` walks the graph of a `tf.function` and counts every product and convolution it runs, which for
a train step includes the backward pass exactly as TensorFlow builds it (both gradients of a dense layer are
matmuls of the forward one's size, so a trained dense layer costs 3 times its forward pass; 2 when its
input needs no gradient).
"""

import math

import keras
import tensorflow as tf


def matmul_flops(m: int, k: int, n: int, batch: int = 1) -> int:
  """[batch, m, k] @ [batch, k, n]: 2 m k n per matrix."""
  return 2 * batch * m * k * n


def conv2d_flops(batch: int, out_height: int, out_width: int, kernel_height: int, kernel_width: int,
                 in_channels: int, out_channels: int) -> int:
  """A 2-D convolution: every output value is a dot product of length kh * kw * C_in."""
  return 2 * batch * out_height * out_width * out_channels * kernel_height * kernel_width * in_channels


def conv2d_transpose_flops(batch: int, in_height: int, in_width: int, kernel_height: int, kernel_width: int,
                           in_channels: int, out_channels: int) -> int:
  """A transposed convolution: every input value is scattered through a kh * kw * C_out kernel (the
  multiply-adds of the convolution it is the gradient of)."""
  return 2 * batch * in_height * in_width * in_channels * kernel_height * kernel_width * out_channels


def layer_flops(layer, input_shape) -> int:
  """Forward FLOPs of one built Keras layer on inputs of `input_shape` (batch first, fully known).

  Dense, Conv2D and Conv2DTranspose (channels last); any other layer counts 0.
  """
  shape = [int(d) for d in input_shape]
  if isinstance(layer, keras.layers.Dense):
    return matmul_flops(math.prod(shape[:-1]), shape[-1], layer.units)
  if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
    if layer.data_format != "channels_last" or getattr(layer, "groups", 1) != 1:
      raise ValueError(f"{layer.name}: only channels_last convolutions without groups are counted")
    batch, height, width, channels = shape
    kh, kw = layer.kernel_size
    if isinstance(layer, keras.layers.Conv2DTranspose):
      return conv2d_transpose_flops(batch, height, width, kh, kw, channels, layer.filters)
    _, out_h, out_w, _ = layer.compute_output_shape(tuple(shape))
    return conv2d_flops(batch, out_h, out_w, kh, kw, channels, layer.filters)
  return 0


# Graph ops: each returns the op's FLOPs from its static shapes.

def _dims(tensor):
  dims = tensor.shape.as_list()
  if any(d is None for d in dims):
    raise ValueError(f"{tensor.name} has an unknown dimension {dims}: trace with fully known shapes")
  return dims


def _matmul(op):
  a = _dims(op.inputs[0])
  out = _dims(op.outputs[0])
  adjoint = op.get_attr("adj_x") if op.type.startswith("BatchMatMul") else op.get_attr("transpose_a")
  k = a[-2] if adjoint else a[-1]
  return matmul_flops(out[-2], k, out[-1], math.prod(out[:-2]))


def _conv2d(op):
  kh, kw, c_in, c_out = _dims(op.inputs[1])
  n, h, w, _ = _dims(op.outputs[0])
  return conv2d_flops(n, h, w, kh, kw, c_in, c_out)


def _conv2d_backprop_input(op):
  # The gradient of a Conv2D (and Keras's Conv2DTranspose): as many multiply-adds as the convolution whose
  # input has this op's output shape and whose output is this op's `out_backprop` input.
  kh, kw, c_in, c_out = _dims(op.inputs[1])
  n, h, w, _ = _dims(op.inputs[2])
  return conv2d_flops(n, h, w, kh, kw, c_in, c_out)


def _conv2d_backprop_filter(op):
  kh, kw, c_in, c_out = _dims(op.outputs[0])  # the filter's gradient has the filter's shape
  n, h, w, _ = _dims(op.inputs[2])
  return conv2d_flops(n, h, w, kh, kw, c_in, c_out)


OP_COUNTERS = {
    "MatMul": _matmul,
    "BatchMatMul": _matmul,
    "BatchMatMulV2": _matmul,
    "BatchMatMulV3": _matmul,
    "Conv2D": _conv2d,
    "Conv2DBackpropInput": _conv2d_backprop_input,
    "Conv2DBackpropFilter": _conv2d_backprop_filter,
}

# Heavy ops this counter has no formula for: meeting one raises rather than silently undercounting.
_UNCOUNTED = ("Conv3D", "DepthwiseConv2dNative", "Einsum", "_FusedMatMul", "_FusedConv2D")


def graph_flops(fn, *args, **kwargs) -> int:
  """FLOPs of one call of `fn` (a `tf.function`, or a plain function, traced here) on `args`.

  Every op that runs is counted: those the graph's outputs and control outputs (its side effects) depend
  on, as the function runtime prunes the rest (e.g. the parts of a tape's gradient that nothing uses), and,
  in the same way, the ops of the branches of `tf.cond` and of called functions. A `tf.cond` counts both
  branches and a loop body counts once, so trace functions whose products run unconditionally and outside
  loops (a train step does: only the optimizer update sits in a branch).
  """
  if not hasattr(fn, "get_concrete_function"):
    fn = tf.function(fn)
  graph = fn.get_concrete_function(*args, **kwargs).graph
  return _count(graph, graph, {})


def _count(graph, root, per_function):
  """FLOPs of `graph`'s ops plus those of every function its ops call (each call counted; a function's
  own total computed once, in `per_function`)."""
  total = 0
  for op in running_ops(graph):
    if op.type in _UNCOUNTED:
      raise ValueError(f"op {op.type} ({op.name}) is not counted by fden_tf.flops")
    counter = OP_COUNTERS.get(op.type)
    if counter is not None:
      total += counter(op)
    for name in _function_names(op):
      if name not in per_function:
        per_function[name] = _count(_function_graph(graph, root, name), root, per_function)
      total += per_function[name]
  return total


def running_ops(graph):
  """The ops of `graph` that its outputs and control outputs depend on, in graph order."""
  stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
  seen = set()
  while stack:
    op = stack.pop()
    if op not in seen:
      seen.add(op)
      stack.extend(t.op for t in op.inputs)
      stack.extend(op.control_inputs)
  return [op for op in graph.get_operations() if op in seen]


def _function_names(op):
  names = []
  for key, value in op.node_def.attr.items():
    if value.HasField("func"):
      names.append(value.func.name)
    elif value.HasField("list"):
      names.extend(f.name for f in value.list.func)
  return names


def _function_graph(graph, root, name):
  for g in (graph, root):
    fn = g._get_function(name)  # pylint: disable=protected-access
    if fn is not None and getattr(fn, "graph", None) is not None:
      return fn.graph
  raise ValueError(f"cannot find the graph of function {name} to count its FLOPs")
