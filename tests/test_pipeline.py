"""`edgefire build` end to end on the tiny set: artifacts, report contract, gates, increments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from edgefire import api, artifacts, contract, data, pipeline, runtimes
from edgefire.cli import app
from tests.conftest import BUILD, TINY_TRAIN

DEPLOYABLES = ["squeezenet_int8.tflite", "squeezenet_float32.tflite", "squeezenet_float32.onnx",
               "squeezenet_int8.onnx"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def stage_status(folder) -> dict:
    log = json.loads((folder / "build.json").read_text())
    return {name: stage["status"] for name, stage in log["stages"].items()}


def test_every_deployable_exists_and_runs_in_its_runtime(built, image_folder):
    ds = data.load(str(image_folder))
    for name in DEPLOYABLES:
        predicted = runtimes.predict(runtimes.open_model(built / name), ds.x_test[:20])
        assert predicted.shape == (20,)
    for name in ("squeezenet_float32.onnx", "squeezenet_int8.onnx"):
        onnx.checker.check_model(onnx.load(str(built / name)), full_check=True)


def test_manifest_records_io_names_of_exported_files(built):
    manifest = json.loads((built / "manifest.json").read_text())["artifacts"]
    assert manifest["squeezenet_float32.onnx"]["input_names"] == ["image"]
    assert manifest["squeezenet_float32.onnx"]["output_names"] == ["scores"]
    for name in ("squeezenet_float32.tflite", "squeezenet_int8.tflite"):
        assert manifest[name]["input_names"] == ["serving_default_image:0"]


def test_labels_match_the_classes(built, image_folder):
    labels = (built / "labels.txt").read_text().splitlines()
    assert labels == list(data.load(str(image_folder)).classes)


def test_report_json_follows_the_contract(built):
    report = json.loads((built / "report.json").read_text())
    assert report["schema"] == 1 and report["passed"] is True
    assert {"created", "edgefire_version", "target_bytes", "reference", "gates"} <= set(report)
    assert report["parameters"] == 122_986  # the reference architecture, 10 classes
    assert report["multiply_accumulates"] == 6_284_480
    assert report["dataset"]["test_images"] == 200
    assert report["input"] == {"layout": "NHWC", "color": "RGB", "size": [32, 32],
                               "normalize": {"mean": [0.0, 0.0, 0.0],
                                             "std": [255.0, 255.0, 255.0]},
                               "resize": contract.RESIZE}
    keys = {"name", "path", "format", "precision", "bytes", "gzip_bytes", "sha256",
            "under_target", "accuracy", "accuracy_drop", "agreement", "latency_ms",
            "throughput_ips", "sparsity", "class_accuracy", "confusion", "accuracy_ci95",
            "drop_ci95", "mcnemar_p", "runtimes"}
    names = [a["name"] for a in report["artifacts"]]
    assert names == [report["reference"], *DEPLOYABLES]
    for artifact in report["artifacts"]:
        assert set(artifact) == keys
        assert artifact["bytes"] == (built / artifact["path"]).stat().st_size
        assert artifact["format"] in ("keras", "tflite", "onnx")
        assert 0 <= artifact["accuracy"] <= 1 and 0 <= artifact["agreement"] <= 1
    gated = {g["artifact"] for g in report["gates"]}
    assert gated == {"squeezenet_int8.tflite", "squeezenet_int8.onnx"}
    assert all({"name", "limit", "value", "passed"} <= set(g) for g in report["gates"])
    assert (built / "report.md").exists() and (built / "report.png").read_bytes()[:4] == \
        b"\x89PNG"


def test_report_gives_each_accuracy_and_drop_with_its_interval(built):
    report = json.loads((built / "report.json").read_text())
    for row in report["artifacts"]:
        low, high = row["accuracy_ci95"]
        assert low <= row["accuracy"] <= high and high - low < 0.5
        drop_low, drop_high = row["drop_ci95"]
        assert drop_low <= row["accuracy_drop"] <= drop_high
        assert 0 <= row["mcnemar_p"] <= 1
    assert report["artifacts"][0]["drop_ci95"] == [0, 0]  # the reference against itself
    drop_gates = [g for g in report["gates"] if g["metric"] == "accuracy_drop"]
    assert drop_gates and all("ci95" in g and "mcnemar_p" in g for g in drop_gates)


def test_report_accuracy_equals_an_independent_evaluation(built, image_folder):
    from ai_edge_litert.interpreter import Interpreter

    report = {a["name"]: a for a in json.loads((built / "report.json").read_text())["artifacts"]}
    ds = data.load(str(image_folder))
    interpreter = Interpreter(model_path=str(built / "squeezenet_int8.tflite"))
    interpreter.allocate_tensors()
    tensor_in = interpreter.get_input_details()[0]
    hits = 0
    for image, label in zip(ds.x_test, ds.y_test, strict=True):
        interpreter.set_tensor(tensor_in["index"], image[None])  # raw pixels, as a phone would
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(
            interpreter.get_output_details()[0]["index"])) == label)
    assert report["squeezenet_int8.tflite"]["accuracy"] == hits / len(ds.y_test)
    import onnxruntime as ort

    session = ort.InferenceSession(str(built / "squeezenet_float32.onnx"))
    scores = session.run(None, {"image": ds.x_test.astype(np.float32) / 255})[0]
    assert report["squeezenet_float32.onnx"]["accuracy"] == np.mean(scores.argmax(1) == ds.y_test)


ROOT = Path(__file__).resolve().parent.parent
MEDIAPIPE_PYTHON = Path(os.environ.get("EDGEFIRE_MEDIAPIPE_PYTHON",
                                       ROOT / ".venv-mediapipe" / "bin" / "python"))


@pytest.mark.skipif(not MEDIAPIPE_PYTHON.exists(),
                    reason="MediaPipe lives in its own venv, made by `make test`")
def test_mediapipe_loads_the_int8_tflite_as_is_and_answers_with_class_names(built, image_folder,
                                                                           tmp_path):
    ds = data.load(str(image_folder))
    images = ds.x_test[::20]  # two of every class
    np.save(tmp_path / "images.npy", images)
    model = built / "squeezenet_int8.tflite"
    done = subprocess.run([str(MEDIAPIPE_PYTHON), str(ROOT / "tests" / "mediapipe_classify.py"),
                           str(model), str(tmp_path / "images.npy")],
                          capture_output=True, text=True, check=True)
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    labels = (built / "labels.txt").read_text().splitlines()
    assert [name for _, name, _ in answers] == [labels[index] for index, _, _ in answers]
    scores = runtimes.open_model(model).run(images)  # the LiteRT interpreter's scores
    for (index, _, score), row in zip(answers, scores, strict=True):
        assert row[index] == row.max()  # MediaPipe's top-1 is LiteRT's top-1 (ties allowed)
        assert score == pytest.approx(row.max(), abs=1e-6)


def test_compare_tabulates_a_build_from_its_own_records(built, tmp_path):
    out = tmp_path / "ablation.md"
    result = invoke("compare", str(built), "--output", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((built / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["name"] == "squeezenet_int8.tflite")
    row = out.read_text().splitlines()[2].split(" | ")
    assert row[1:6] == ["squeezenet", "122,986", "6,284,480", "3", f"{int8['bytes']:,}"]
    assert row[6] == f"{int8['accuracy']:.2%}"
    assert out.read_text() in result.output


def test_compare_of_a_folder_without_a_build_says_what_is_missing(tmp_path):
    result = invoke("compare", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip() == f"edgefire: error: {tmp_path}/train.json: training metadata " \
                                    "not found (run `edgefire train` first)"


def test_second_build_is_up_to_date_and_leaves_the_folder_as_it_was(built, image_folder):
    before = {p: p.read_bytes() for p in built.rglob("*") if p.is_file()}
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(built))
    assert result.exit_code == 0, result.output
    assert result.output.count(": up to date") == 5, result.output
    assert "= nothing ran: build.json still logs the build that made these files" \
        in result.output
    assert {p: p.read_bytes() for p in built.rglob("*") if p.is_file()} == before
    assert set(stage_status(built).values()) == {"ran"}  # the log of the build that made it


def test_a_changed_dataset_trains_again_and_a_moved_one_does_not(built, image_folder,
                                                                  copy_of, tmp_path):
    folder = copy_of(built)
    moved = Path(shutil.copytree(image_folder, tmp_path / "moved", copy_function=shutil.copy2))
    result = invoke(*BUILD, "--data", str(moved), "--artifacts", str(folder), "--micro-images",
                    "100")  # a verify option: verify alone runs again, on the data's new place
    assert result.exit_code == 0, result.output
    status = stage_status(folder)
    assert status.pop("verify") == "ran" and set(status.values()) == {"up to date"}
    fingerprint = json.loads((folder / "manifest.json").read_text())["stages"]["train"][
        "config"]["data_fingerprint"]
    assert fingerprint == data.source_fingerprint(str(image_folder))  # where is not what
    shutil.copy(next((moved / "train" / "cat").iterdir()), moved / "train" / "cat" / "new.png")
    train = pipeline.steps(api.plan({"train": {"data": str(moved), "epochs": 3, "batch_size": 32,
                                               "seed": 1, "learning_rate": 0.05}}))[0]
    assert train.name == "train"  # a build now trains again, and so reruns every stage
    assert not artifacts.stage_is_current(folder, "train", train.inputs(folder), train.config)


def test_changing_max_drop_reruns_quantize_and_later_never_train_or_prune(built, image_folder,
                                                                          copy_of):
    folder = copy_of(built)  # --max-drop is quantize's fallback budget and verify's gate
    result = invoke(*BUILD, "--data", str(image_folder), "--artifacts", str(folder),
                    "--max-drop", "2.5")
    assert result.exit_code == 0, result.output
    status = stage_status(folder)  # export: quantize made the same bytes again
    assert status == {"train": "up to date", "prune": "up to date", "quantize": "ran",
                      "export": "up to date", "verify": "ran"}
    assert json.loads((folder / "quantize.json").read_text())["fallback"]["max_drop"] == 2.5


def test_a_dry_run_says_what_would_run_and_why_and_writes_nothing(built, image_folder):
    before = {p: p.read_bytes() for p in built.rglob("*") if p.is_file()}
    build = [*BUILD, "--data", str(image_folder), "--artifacts", str(built), "--dry-run"]
    result = invoke(*build, "--sparsity", "0.3")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "= train: up to date", "> prune: would run (changed: sparsity 0.4 -> 0.3)",
        "> quantize: would run (after prune)", "> export: would run (after prune)",
        "> verify: would run (after prune)"]
    assert invoke(*build).output.count(": up to date") == 5
    assert "> train: would run (--force)" in invoke(*build, "--force").output
    nowhere = built.parent / "not-built"
    assert "> train: would run (it has not run here)" in invoke(
        *BUILD, "--data", str(image_folder), "--artifacts", str(nowhere), "--dry-run").output
    assert not nowhere.exists()
    assert {p: p.read_bytes() for p in built.rglob("*") if p.is_file()} == before


def test_size_gate_failure_exits_1_naming_the_artifact(built, copy_of):
    folder = copy_of(built)
    result = invoke("verify", "--artifacts", str(folder), "--max-bytes", "1000")
    assert result.exit_code == 1, result.output
    assert "squeezenet_int8.tflite is" in result.output and "over the 1,000-byte" in result.output
    assert "✗" in result.output  # the table marks the failing cells
    assert json.loads((folder / "report.json").read_text())["passed"] is False


def test_verify_refuses_an_artifact_edited_after_the_build(built, copy_of):
    folder = copy_of(built)
    tflite = folder / "squeezenet_int8.tflite"
    content = bytearray(tflite.read_bytes())
    content[-100] ^= 0xFF
    tflite.write_bytes(bytes(content))
    result = invoke("verify", "--artifacts", str(folder))
    assert result.exit_code == 2
    assert "squeezenet_int8.tflite: bytes do not match the manifest" in result.output


@pytest.mark.parametrize("name", ["squeezenet_int8.tflite", "squeezenet_int8.onnx", "pruned.h5"])
@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_model_files_give_one_clear_line(tmp_path, built, name, damage):
    path = tmp_path / name
    content = (built / name).read_bytes()
    path.write_bytes({"truncate": content[:len(content) // 3], "empty": b"",
                      "garbage": b"not a model at all" * 10}[damage])
    from edgefire.errors import EdgefireError

    with pytest.raises(EdgefireError, match=name):
        runtimes.predict(runtimes.open_model(path), np.zeros((2, 32, 32, 3), np.uint8))


def test_data_with_other_classes_than_the_model_is_refused(trained_folder, copy_of, tmp_path):
    from tests import synthetic

    other = tmp_path / "four"
    for split in ("train", "test"):
        for name in synthetic.CLASSES[:4]:
            (other / split / name).mkdir(parents=True)
    synthetic.write_image_folder(tmp_path / "src", 30, 3)
    for split in ("train", "test"):
        for name in synthetic.CLASSES[:4]:
            for image in (tmp_path / "src" / split / name).iterdir():
                shutil.copy(image, other / split / name)
    result = invoke("prune", "--artifacts", str(copy_of(trained_folder)), "--data", str(other))
    assert result.exit_code == 2, result.output
    assert "model takes (32, 32, 3) with 10 classes, the data has (32, 32, 3) with 4 classes" \
        in result.output


def test_build_stops_at_the_first_failing_stage(image_folder, tmp_path):
    data = shutil.copytree(image_folder, tmp_path / "data")
    next((data / "train" / "cat").iterdir()).write_bytes(b"not an image")
    result = invoke("build", "--data", str(data), "--artifacts", str(tmp_path / "a"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("edgefire: error: train:")
    assert "> prune" not in result.output
    assert not (tmp_path / "a").exists()  # the first build's folder, empty, is gone


@pytest.mark.parametrize("options, gated", [
    (["--quantize", "float16"], "squeezenet_float16.tflite"),
    (["--io", "int8"], "squeezenet_int8.onnx"),
])
def test_documented_precision_and_io_options_build_and_verify(built, image_folder, copy_of,
                                                              options, gated):
    folder = copy_of(built)
    args = [*BUILD, "--data", str(image_folder), "--artifacts", str(folder), "--micro-images",
            "20"]
    if options[0] == "--quantize":
        args = [a for a in args if a not in ("--quantize", "int8")]
    result = invoke(*args, *options)
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "report.json").read_text())
    row = next(r for r in report["artifacts"] if r["name"] == gated)
    assert row["accuracy"] > 0.5 and report["passed"]


def test_a_relative_data_path_is_kept_as_given_and_a_moved_project_is_up_to_date(
        image_folder, tmp_path, monkeypatch):
    from edgefire import api, pipeline

    project = tmp_path / "project"
    shutil.copytree(image_folder, project / "data", copy_function=shutil.copy2)
    monkeypatch.chdir(project)
    result = invoke("train", "--data", "data", "--artifacts", "out", *TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert json.loads(Path("out/train.json").read_text())["config"]["data"] == "data"
    moved = project.rename(tmp_path / "moved")
    monkeypatch.chdir(moved)
    plan = api.plan({"train": {"data": "data", "epochs": 3, "batch_size": 32, "seed": 1,
                               "learning_rate": 0.05}})
    assert not pipeline.training_needed(plan, Path("out"))
    monkeypatch.chdir(tmp_path)
    result = invoke("prune", "--artifacts", str(moved / "out"))
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "the build's data data is not found" in result.output and "--data" in result.output
