"""The TFLite converter set up for edgefire's modes (int8 full-integer with raw-pixel uint8
input, float16, dynamic range, none), used by quantize, export and channel pruning's byte
search.
"""

from __future__ import annotations

import numpy as np

from edgefire.contract import InputContract
from edgefire.errors import ToolFailed
from edgefire.tfenv import quiet, tensorflow


def representative_dataset(images: np.ndarray, contract: InputContract):
    """Calibration batches; the first image is given the two ends of the input range (pixels
    0 and 255), so the converter makes the uint8 input exactly the raw pixels."""
    def generate():
        for i, image in enumerate(images):
            if i == 0:
                image = image.copy()
                image[0, 0], image[0, 1] = 0, 255
            yield [contract.normalize(image[None])]

    return generate


def converter(model, mode: str, io: str, calibration: np.ndarray, sparse: bool,
              contract: InputContract):
    """The TFLite converter of `model` set up for `mode`; `sparse` asks for sparse encoding."""
    from edgefire.models import flip_average

    tf = tensorflow()
    if flip_average.network_of(model) is not None:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [flip_average.static_batch(model)], model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [] if mode == "none" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        converter.representative_dataset = representative_dataset(calibration, contract)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8 if io == "uint8" else tf.int8
        converter.inference_output_type = tf.uint8 if io == "uint8" else tf.int8
    return converter


def convert(model, mode: str, io: str, calibration: np.ndarray, sparse: bool,
            contract: InputContract) -> bytes:
    """TFLite flatbuffer bytes of `model` in `mode`; `sparse` asks for sparse weight encoding."""
    try:
        with quiet():
            return converter(model, mode, io, calibration, sparse, contract).convert()
    except Exception as exc:  # the converter raises ConverterError and friends
        message = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ToolFailed(f"the TFLite converter ({mode}) failed: {message}") from None


# Below this fraction of zeros an int8 model is smaller stored dense (`make bench-sparse`,
# artifacts/bench-sparse.md: the reference at each fraction, int8 bytes dense -> sparse:
# 38.6% 160,944 -> 209,272; 57.9% -> 162,168; 67.5% -> 138,616; dynamic alike). Float
# weights gain already at 38.6% (float32 502,756 -> 399,132), so both are tried there.
INT8_SPARSE_FROM = 0.5


def smallest_encoding(model, mode: str, io: str, calibration: np.ndarray,
                      sparsity: float, contract: InputContract) -> tuple[bytes, bool]:
    """Dense bytes, or sparse-encoded ones when pruning left zeros and that is measurably
    smaller (tried only where it can be: any zeros in float, `INT8_SPARSE_FROM` in int8)."""
    dense = convert(model, mode, io, calibration, False, contract)
    if sparsity <= 0 or (mode in ("int8", "dynamic") and sparsity < INT8_SPARSE_FROM):
        return dense, False
    sparse = convert(model, mode, io, calibration, True, contract)
    return (sparse, True) if len(sparse) < len(dense) else (dense, False)
