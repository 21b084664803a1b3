"""The FLOP counter against hand counts, and benchmarks/throughput.py end to end at toy sizes."""

import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from fden_tf import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _forward_and_backward(layer, x):
  """sum(layer(x)) and its gradients for the input and every weight: a train step's products for one layer
  (the loss is returned, as a train step's is; else its forward product would not run)."""
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = tf.reduce_sum(layer(x))
    return y, tape.gradient(y, [x] + layer.trainable_variables)
  return step


def _check_counts(layer, x, hand):
  """The per-layer count, the traced forward graph and the traced training step (3x: forward, and the two
  backward products of the same size) all agree with the hand count."""
  assert flops.layer_flops(layer, x.shape) == hand
  assert flops.graph_flops(lambda x: layer(x), x) == hand
  assert flops.graph_flops(_forward_and_backward(layer, x), x) == 3 * hand


def test_dense_flops_match_hand_count():
  layer = keras.layers.Dense(4)
  x = tf.zeros([5, 3])
  layer(x)
  hand = 2 * 5 * 3 * 4  # 5 rows, each 4 dot products of length 3: 60 multiply-adds
  assert hand == 120
  # Backward: dL/dx = g W^T and dL/dW = x^T g are matmuls of the forward one's size.
  _check_counts(layer, x, hand)


def test_conv2d_flops_match_hand_count():
  layer = keras.layers.Conv2D(4, 3, strides=2, padding="valid")
  x = tf.zeros([2, 9, 9, 3])
  layer(x)
  # Output 4x4 (floor((9 - 3) / 2) + 1), 4 channels, each a 3x3x3 dot product: 2 * 2*4*4*4 * 27.
  hand = 2 * (2 * 4 * 4 * 4) * (3 * 3 * 3)
  assert hand == 6912
  _check_counts(layer, x, hand)


def test_conv2d_transpose_flops_match_hand_count():
  layer = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid")
  x = tf.zeros([2, 9, 9, 3])
  layer(x)
  # Every input value (2 x 9 x 9 x 3) is scattered through a 3x3x4 kernel.
  hand = 2 * (2 * 9 * 9 * 3) * (3 * 3 * 4)
  assert hand == 34992
  _check_counts(layer, x, hand)


def test_graph_flops_counts_batched_matmuls_and_cond_branches():
  a, b = tf.zeros([6, 2, 3]), tf.zeros([6, 3, 5])
  assert flops.graph_flops(lambda a, b: tf.matmul(a, b), a, b) == 2 * 6 * 2 * 3 * 5
  m = tf.zeros([4, 4])
  # A tf.cond counts both branches (the products in them are counted wherever they sit).
  branchy = lambda m: tf.cond(m[0, 0] > 0, lambda: tf.matmul(m, m), lambda: m)
  assert flops.graph_flops(branchy, m) == 2 * 4 * 4 * 4


def test_graph_flops_counts_only_ops_that_run():
  m = tf.zeros([4, 4])
  # The unused product is pruned by the function runtime, so it is not counted; one the result (or a
  # side effect, like a variable update) depends on is.
  assert flops.graph_flops(lambda m: (tf.matmul(m, m), m + 1)[1], m) == 0
  v = tf.Variable(tf.zeros([4, 4]))
  assert flops.graph_flops(lambda m: (v.assign(tf.matmul(m, m)), m + 1)[1], m) == 2 * 4 * 4 * 4
  # A tape's gradient runs only the products it needs: d(sum(x w1 w2))/dw2 = (x w1)^T 1 needs x w1 and
  # one backward product, not (x w1) w2 (unless the loss itself is returned), nor anything for w1.
  x, w1, w2 = tf.zeros([2, 3]), tf.Variable(tf.zeros([3, 5])), tf.Variable(tf.zeros([5, 7]))

  def grad_w2(with_loss):
    with tf.GradientTape() as tape:
      y = tf.reduce_sum(tf.matmul(tf.matmul(x, w1), w2))
    return (y, tape.gradient(y, w2)) if with_loss else tape.gradient(y, w2)

  x_w1, x_w1_w2, backward = 2 * 2 * 3 * 5, 2 * 2 * 5 * 7, 2 * 5 * 2 * 7
  assert flops.graph_flops(lambda: grad_w2(False)) == x_w1 + backward
  assert flops.graph_flops(lambda: grad_w2(True)) == x_w1 + x_w1_w2 + backward


def test_graph_flops_refuses_unknown_shapes():
  fn = tf.function(lambda x: tf.matmul(x, x, transpose_b=True),
                   input_signature=[tf.TensorSpec([None, 3])])
  with pytest.raises(ValueError, match="unknown dimension"):
    flops.graph_flops(fn)


@pytest.mark.slow
def test_benchmark_runs_end_to_end_at_toy_sizes(tmp_path):
  output = tmp_path / "throughput.json"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
  memory_command = f"{sys.executable} -c \"print('hello')\""
  result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "throughput.py"), "--tiny",
                           f"--output={output}", f"--memory_command={memory_command}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(output.read_text())
  for section in ("fden", "variants", "ali", "ceiling", "fewshot", "pipeline", "memory"):
    assert section in results, section
  assert results["fden"]["trainer_episodes_per_s"] > 0 and results["fden"]["naive_episodes_per_s"] > 0
  assert results["ali"]["flops_per_step"] > 0 and min(results["ceiling"]["flops_per_s"].values()) > 0
  assert 0 < results["ceiling"]["ali"]["fraction"] and 0 < results["ceiling"]["fden"]["fraction"]
  assert 0 < results["ali"]["trainer_images_per_s"] and 0 < results["ali"]["bare_images_per_s"]
  assert {"tf.function", "eager"} <= set(results["variants"][0]["variants"])
  assert 0.0 <= results["fewshot"]["vectorised_accuracy"] <= 1.0
  assert results["memory"]["this_process_bytes"] > 0
  child = results["memory"]["commands"][0]
  assert child["exit_status"] == 0 and 0 < child["peak_bytes"] < results["memory"]["this_process_bytes"]
  # The table the README takes is printed and saved.
  assert results["table"].startswith("| # | measurement |")
  assert results["table"] in result.stdout
  for item in range(1, 8):
    assert f"\n| {item} | " in results["table"], item
