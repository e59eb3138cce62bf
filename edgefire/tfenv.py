"""The single place TensorFlow is imported, so Keras 2 (tf_keras) is selected before it loads.

tensorflow-model-optimization 0.8 does not support Keras 3, so every module asks this one
for `tf` and `keras` instead of importing TensorFlow itself.
"""

import os
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensorflow():
    """TensorFlow, imported on first use with legacy Keras selected."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=".*HDF5 file via `model.save", category=UserWarning)
    return tf


def keras():
    """tf_keras (Keras 2), the Keras that tfmot and the TFLite converter expect."""
    import tf_keras

    return tf_keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic."""
    tf = tensorflow()
    keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
