import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import fden_tf  # pylint: disable=g-import-not-at-top,unused-import  (before TensorFlow, as the scripts import it)
import tensorflow as tf  # pylint: disable=g-import-not-at-top

# Two logical CPU devices, so tests can run MirroredStrategy(["/cpu:0", "/cpu:1"]) (tests/test_distribute.py).
# This must happen before TensorFlow runs anything; everything else keeps using /cpu:0 as before.
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
