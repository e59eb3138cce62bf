"""The runtime matrix of verify: every file in every installed runtime that takes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire import report, runtimes
from edgefire.cli import app
from edgefire.config import VerifyConfig
from edgefire.runtimes import matrix
from edgefire.stages import verify as verification

EXPECTED = {"pruned.h5": ["tf_keras"],
            "squeezenet_int8.tflite": ["litert", "openvino", "tflite-micro"],
            "squeezenet_float32.tflite": ["litert", "openvino", "tflite-micro"],
            "squeezenet_float32.onnx": ["onnxruntime", "openvino"],
            "squeezenet_int8.onnx": ["onnxruntime", "openvino"]}


def rows(folder) -> dict:
    result = json.loads((folder / "report.json").read_text())
    return {row["name"]: row for row in result["artifacts"]}


def test_every_file_runs_in_every_runtime_that_takes_it(built):
    by_name = rows(built)
    assert {name: list(row["runtimes"]) for name, row in by_name.items()} == EXPECTED
    openvino = by_name["squeezenet_int8.tflite"]["runtimes"]["openvino"]
    assert openvino["images"] == 200 and 0.95 <= openvino["agreement"] <= 1
    assert abs(openvino["accuracy_drop"] - by_name["squeezenet_int8.tflite"]["accuracy_drop"]) \
        < 2.5  # at most a few of the 200 images differ from LiteRT
    assert by_name["squeezenet_int8.onnx"]["runtimes"]["openvino"]["error"] is None


def test_the_onnx_cell_is_what_onnxruntime_measures_by_hand(built, image_folder):
    """The int8 ONNX file, fed as report.json's input says, in onnxruntime directly."""
    import onnxruntime
    from PIL import Image

    result = json.loads((built / "report.json").read_text())
    norm = result["input"]["normalize"]
    session = onnxruntime.InferenceSession(str(built / "squeezenet_int8.onnx"))
    feed = session.get_inputs()[0].name
    right = total = 0
    for label, name in enumerate(result["classes"]):
        for file in sorted((image_folder / "test" / name).iterdir()):
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
            x = ((pixels - norm["mean"]) / norm["std"]).astype(np.float32)
            right += int(np.argmax(session.run(None, {feed: x[None]})[0]) == label)
            total += 1
    cell = rows(built)["squeezenet_int8.onnx"]["runtimes"]["onnxruntime"]
    assert total == result["dataset"]["test_images"]
    assert right / total == pytest.approx(cell["accuracy"])


def test_tflite_micro_gives_the_arena_of_the_int8_file_and_refuses_the_sparse_float_one(built):
    by_name = rows(built)
    micro = by_name["squeezenet_int8.tflite"]["runtimes"]["tflite-micro"]
    assert 10_000 < micro["arena_bytes"] < 200_000 and micro["latency_ms"] > 0
    assert micro["images"] == 200 and micro["agreement"] >= 0.95  # all 200 (< --micro-images)
    refused = by_name["squeezenet_float32.tflite"]["runtimes"]["tflite-micro"]
    assert "accuracy" not in refused and "DENSIFY" in refused["error"]
    text = (built / "report.md").read_text()
    assert f"arena {micro['arena_bytes']:,} bytes of RAM" in text and "DENSIFY" in text


def test_gates_hold_in_every_runtime_that_ran_a_gated_file_unless_native_is_asked(built,
                                                                                  copy_of):
    result = json.loads((built / "report.json").read_text())
    where = {(g["artifact"], g.get("runtime")) for g in result["gates"]
             if g["metric"] == "accuracy_drop"}
    assert where == {("squeezenet_int8.tflite", None), ("squeezenet_int8.tflite", "openvino"),
                     ("squeezenet_int8.tflite", "tflite-micro"),
                     ("squeezenet_int8.onnx", None), ("squeezenet_int8.onnx", "openvino")}
    folder = copy_of(built)
    done = CliRunner().invoke(app, ["verify", "--artifacts", str(folder),
                                    "--gate-runtimes", "native"])
    assert done.exit_code == 0, done.output
    native = json.loads((folder / "report.json").read_text())["gates"]
    assert all("runtime" not in g for g in native) and len(native) == 4


def test_a_drop_in_another_runtime_fails_its_gate_by_name():
    cell = {"accuracy": 0.7, "accuracy_ci95": [0.68, 0.72], "accuracy_drop": 7.0,
            "drop_ci95": [6.0, 8.0], "mcnemar_p": 0.001, "agreement": 0.9}
    native = {**cell, "accuracy": 0.8, "accuracy_drop": 0.1, "drop_ci95": [0.0, 0.2]}
    row = {"name": "m_int8.tflite", "bytes": 100,
           "runtimes": {"litert": native, "openvino": cell, "tflite-micro": {"error": "no"}}}
    gates = verification.gates([row], {"m_int8.tflite"}, VerifyConfig(max_bytes=500_000))
    failed = [g for g in gates if not g["passed"]]
    assert [g["runtime"] for g in failed] == ["openvino"]
    assert report.describe_failure(failed[0]).startswith("m_int8.tflite in openvino drops 7.00")
    native_only = verification.gates([row], {"m_int8.tflite"},
                                    VerifyConfig(max_bytes=500_000, gate_runtimes="native"))
    assert all(g["passed"] for g in native_only)


def test_a_runtime_not_installed_is_skipped_with_a_line_saying_how_to_get_it(built):
    absent = runtimes.Runtime("absent", runtimes.TFLiteRunner, "no_such_module_x", "absent")
    cell = matrix.entry(built / "squeezenet_int8.tflite", absent, np.zeros((1, 32, 32, 3),
                                np.uint8), np.zeros(1, int), np.zeros(1, int), np.ones(1, bool),
                                None, 1)
    assert cell == {"skipped": "not installed (pip install 'edgefire[absent]')"}
    result = {"artifacts": [{"runtimes": {"absent": cell}}, {"runtimes": {"absent": cell}}]}
    assert report.skipped(result) == [
        "absent: not installed (pip install 'edgefire[absent]'), skipped"]


def test_a_runtime_that_cannot_run_a_file_is_a_result_not_a_crash(tmp_path, built):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes((built / "squeezenet_int8.tflite").read_bytes()[:5000])
    with pytest.raises(runtimes.EdgefireError, match="broken.tflite"):
        runtimes.open_model(broken, runtime="tflite-micro")


def test_the_subset_takes_as_many_images_of_each_class_the_same_each_time():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    picked = matrix.balanced_subset(labels, 40)
    assert np.bincount(labels[picked]).tolist() == [10, 10, 10, 10]
    assert np.array_equal(picked, matrix.balanced_subset(labels, 40))
    assert len(matrix.balanced_subset(labels, 0)) == 200


def test_export_chooses_an_int8_onnx_every_onnx_runtime_runs(built):
    chosen = json.loads((built / "export.json").read_text())["int8_onnx"]
    accuracies = chosen["candidates"][chosen["chosen"]]["val_accuracy"]
    assert set(accuracies) == {"onnxruntime", "openvino"}
    assert all(isinstance(a, float) for a in accuracies.values())


def test_quantize_records_the_error_of_every_layer_and_the_report_shows_the_worst(built):
    quantized = json.loads((built / "quantize.json").read_text())["layer_error"]
    assert quantized["split"] == "validation" and 0 < quantized["images"] <= 1000
    layers = quantized["layers"]
    names = {r["layer"] for r in layers}
    assert {"conv", "fire2/squeeze1x1", "fire5/expand3x3", "softmax"} <= names
    errors = [r["rmse_over_scale"] for r in layers]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0
    shown = json.loads((built / "report.json").read_text())["layer_error"]["layers"]
    assert shown == layers[:len(shown)] and len(shown) == 5
    assert f"| {layers[0]['layer']} | {layers[0]['op']} |" in (built / "report.md").read_text()


def predictions(folder, image_folder, *extra):
    result = CliRunner().invoke(app, ["predict", str(image_folder / "test"), "--artifacts",
                                      str(folder), "--json", *extra])
    assert result.exit_code == 0, result.output
    return [r["top"][0]["label"] for r in json.loads(result.output)]


def test_predict_runs_the_file_in_the_runtime_asked(built, image_folder):
    litert = predictions(built, image_folder)
    for runtime in ("openvino", "tflite-micro"):
        other = predictions(built, image_folder, "--runtime", runtime)
        assert np.mean(np.array(other) == np.array(litert)) >= 0.95


@pytest.mark.parametrize("extra, message", [
    (["--runtime", "openvno"], "did you mean 'openvino'"),
    (["--runtime", "tflite-micro", "--model", "pruned.h5"], "tflite-micro does not run keras"),
])
def test_predict_refuses_a_runtime_that_cannot_take_the_file_with_one_line(built, image_folder,
                                                                           extra, message):
    extra = [str(built / e) if e.endswith(".h5") else e for e in extra]
    result = CliRunner().invoke(app, ["predict", str(image_folder / "test"), "--artifacts",
                                      str(built), *extra])
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1
