"""The single place TensorFlow is imported, so Keras 2 (tf_keras) is selected before it loads.

tensorflow-model-optimization 0.8 does not support Keras 3, so every module asks this one
for `tf` and `keras` instead of importing TensorFlow itself.
"""

import contextlib
import os
import sys
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ log: its errors too (a tf.data graph built by a newer TensorFlow logs
# "E0000 ... use_unbounded_threadpool" during pruning's fit, harmless); failures that matter
# raise in Python. `--verbose` shows it all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if os.environ.get("EDGEFIRE_VERBOSE") else "3")


@contextlib.contextmanager
def quiet():
    """Silence what the libraries print on the process's stderr (absl and TensorFlow start-up
    lines, the "failed call to cuInit" on machines without a GPU, the converters' logs,
    Python warnings) unless `--verbose` set EDGEFIRE_VERBOSE. edgefire's own lines are
    printed outside these blocks."""
    if os.environ.get("EDGEFIRE_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tensorflow():
    """TensorFlow, imported on first use with legacy Keras selected and its start-up quiet."""
    if "tensorflow" not in sys.modules:
        with quiet():
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery is where cuInit complains
            tf.get_logger().setLevel("ERROR")
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        if not os.environ.get("EDGEFIRE_VERBOSE"):
            warnings.filterwarnings("ignore", category=UserWarning,
                                    module="(tensorflow|tf_keras)")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
    import tensorflow as tf

    return tf


def keras():
    """tf_keras (Keras 2), the Keras that tfmot and the TFLite converter expect."""
    tensorflow()
    import tf_keras

    return tf_keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic."""
    tf = tensorflow()
    keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
