import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import fden_tf  # pylint: disable=g-import-not-at-top,unused-import  (before TensorFlow, as the scripts import it)
from fden_tf import cli  # pylint: disable=g-import-not-at-top

# TensorFlow's start-up lines (oneDNN, "Could not find cuda drivers", "failed call to cuInit") bypass its log
# level; under pytest-xdist each worker's would reach the terminal.
with cli.stderr_to_devnull():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Two logical CPU devices, so tests can run MirroredStrategy(["/cpu:0", "/cpu:1"]) (tests/test_distribute.py).
  # This must happen before TensorFlow runs anything; everything else keeps using /cpu:0 as before.
  tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                             [tf.config.LogicalDeviceConfiguration()] * 2)
