"""The int8 TFLite's tensor names made short: the same model, fewer bytes, its I/O names kept."""

from __future__ import annotations

import numpy as np

from edgefire import metadata, models, tflite_converter, tflite_file
from edgefire.contract import InputContract
from edgefire.runtimes import litert


def scores(tflite: bytes, pixels: np.ndarray, folder) -> np.ndarray:
    path = folder / f"{len(tflite)}.tflite"
    path.write_bytes(tflite)
    interpreter = litert.interpreter(path)
    tensor = interpreter.get_input_details()[0]["index"]
    out = []
    for image in pixels:
        interpreter.set_tensor(tensor, image[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    return np.concatenate(out)


def test_short_names_change_no_output_and_keep_the_io_names(tmp_path):
    contract = InputContract()
    calibration = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    converted = tflite_converter.convert(models.build("squeezenet", batch_norm=False), "int8",
                                         "uint8", calibration, False, contract)
    model = tflite_file.unpack(converted)
    long_names = [t.name.decode() for t in model.subgraphs[0].tensors]
    tflite_file.shorten_names(model)
    shortened = tflite_file.pack(model)
    graph = tflite_file.unpack(shortened).subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    assert len(set(names)) == len(names)
    assert not any(";" in n or n.startswith("squeezenet/") for n in names)
    assert any(";" in n for n in long_names)  # there was something to shorten
    assert [names[i] for i in (*graph.inputs, *graph.outputs)] == \
        [long_names[i] for i in (*graph.inputs, *graph.outputs)]
    assert len(shortened) < len(converted)
    np.testing.assert_array_equal(scores(shortened, calibration, tmp_path),
                                  scores(converted, calibration, tmp_path))


def test_the_metadata_attached_file_has_short_names():
    converted = tflite_converter.convert(models.build("squeezenet", batch_norm=False), "none",
                                         "float32", np.zeros((1, 32, 32, 3), np.uint8), False,
                                         InputContract())
    attached = metadata.attach(converted, "squeezenet", ["a", "b"], InputContract())
    names = [t.name for t in tflite_file.unpack(attached).subgraphs[0].tensors]
    assert not any(b";" in n for n in names)


def test_the_byte_breakdown_adds_up_and_agrees_with_the_interpreter():
    """The committed ResNet-8's int8 file: its parts sum to its size; its quantization
    parameters and names are what LiteRT reads from it; its data holds every weight."""
    from pathlib import Path

    path = Path(__file__).parents[1] / "artifacts" / "variants" / "resnet8" / "resnet8_int8.tflite"
    parts = tflite_file.byte_breakdown(path.read_bytes())
    assert sum(parts.values()) == path.stat().st_size and min(parts.values()) > 0
    details = litert.interpreter(path).get_tensor_details()
    assert parts["quantization_parameters"] == sum(
        4 * len(d["quantization_parameters"]["scales"])
        + 8 * len(d["quantization_parameters"]["zero_points"]) for d in details)
    assert parts["names"] == sum(len(d["name"].encode()) for d in details)
    assert parts["tensor_data"] > 77_706  # its parameters, batch norm folded: int8, int32 biases
