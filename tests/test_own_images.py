"""Your own images: folders of any size, mode and format, `--image-size`, degenerate datasets,
per-class results, `edgefire predict`, and MediaPipe agreeing with it on non-square photos."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgefire import contract, data, runtimes
from edgefire.cli import app
from tests.conftest import TINY_TRAIN, made_once
from tests.test_pipeline import MEDIAPIPE_PYTHON, ROOT

# class name -> colour: names with a space and non-ASCII letters, kept exactly
COLOURS = {"chat noir": (20, 20, 20), "café": (150, 90, 40), "猫": (240, 240, 240)}
SIZES = [(8, 8), (25, 25), (64, 48), (500, 375), (40, 60)]
FORMATS = [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".gif", "GIF"),
           (".webp", "WEBP"), (".tiff", "TIFF")]


def photo(size, colour, seed) -> Image.Image:
    """A noisy image of one colour with a darker square somewhere: learnable per colour."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.asarray(colour, np.float32) + rng.normal(0, 20, (height, width, 3))
    row, col = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
    pixels[row:row + max(1, height // 3), col:col + max(1, width // 3)] *= 0.5
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def in_mode(image: Image.Image, index: int) -> Image.Image:
    """The image in one of the modes users' files come in."""
    mode = ["RGB", "L", "LA", "RGBA", "P", "I;16"][index % 6]
    if mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(gray)
    return image.convert(mode)


def write_folder(root: Path, per_class: dict[str, int], splits=("train", "test")) -> Path:
    """Image folders of mixed sizes, modes and formats, plus files a user's folder has."""
    seed = 0
    for split in splits:
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class[split]):
                seed += 1
                suffix, fmt = FORMATS[i % len(FORMATS)]
                image = in_mode(photo(SIZES[i % len(SIZES)], colour, seed), i)
                if fmt in ("JPEG", "BMP", "WEBP") and image.mode not in ("RGB", "L"):
                    image = image.convert("RGB")
                if fmt == "GIF" and image.mode == "I;16":
                    image = image.convert("L")
                image.save(folder / f"{i:03d}{suffix}", fmt)
            (folder / ".DS_Store").write_bytes(b"\0\1")
            (folder / "Thumbs.db").write_bytes(b"\0\1")
            (folder / "notes.txt").write_text("not an image")
            (folder / ".ipynb_checkpoints").mkdir()
            photo((32, 32), (0, 0, 255), 0).save(folder / ".ipynb_checkpoints" / "x.png")
    return root


@pytest.fixture(scope="session")
def own_folder(tmp_path_factory) -> Path:
    return made_once(tmp_path_factory, "own", lambda folder: write_folder(
        folder / "photos", {"train": 30, "test": 8})) / "photos"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_any_size_mode_and_format_becomes_the_input_size_with_stray_files_skipped(
        own_folder, capsys):
    ds = data.load(str(own_folder), 48)
    assert ds.classes == ("café", "chat noir", "猫")  # sorted, exactly as the folders
    assert ds.x_train.shape == (90, 48, 48, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (24, 48, 48, 3)
    assert "skipped 6 files that are not images (6 .txt)" in capsys.readouterr().out
    means = [ds.x_train[ds.y_train == k].mean() for k in range(3)]
    assert means[1] < means[0] < means[2]  # dark, brown, white: the colours survived


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red as stored
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "phone.jpg"
    image.save(path, "JPEG", exif=exif, quality=95)
    upright = data.read_image(path, 32)
    assert upright[2, 16, 0] > 200 and upright[29, 16, 0] < 60  # red on top once upright


def test_an_image_past_pillows_pixel_limit_is_one_line(tmp_path, monkeypatch):
    from edgefire.errors import EdgefireError

    photo((64, 48), (10, 20, 30), 1).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 3,072 pixels is then "too many"
    with pytest.raises(EdgefireError, match="huge.png: image too large to decode safely"):
        data.read_image(tmp_path / "huge.png", 32)


def test_sixteen_bit_images_are_scaled_to_eight(tmp_path):
    gray = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "scan.png")
    pixels = data.read_image(tmp_path / "scan.png", 2)
    assert pixels[:, :, 0].tolist() == [[0, 255], [128, 255]]


def test_resize_samples_like_mediapipe():
    row = np.array([0, 100, 200, 250], np.uint8)
    image = np.repeat(np.repeat(row[None, :, None], 4, 0), 3, 2)
    # output x reads the source at x * 4 / 8: 0, 0.5, 1, ... 3.5 (the last edge repeated)
    assert contract.resize(image, 8)[0, :, 0].tolist() == [0, 50, 100, 150, 200, 225, 250, 250]


def test_a_val_folder_is_the_validation_split(tmp_path):
    root = write_folder(tmp_path / "v", {"train": 12, "test": 4, "val": 5},
                        ("train", "test", "val"))
    splits = data.split(data.load(str(root), 16), 5000, 0)
    assert len(splits.y_val) == 15 and len(splits.y_train) == 36


def test_the_validation_carve_out_leaves_every_class_a_training_image(tmp_path):
    root = write_folder(tmp_path / "small", {"train": 2, "test": 1})
    splits = data.split(data.load(str(root), 16), 5000, 0)
    assert sorted(np.bincount(splits.y_train, minlength=3)) == [1, 1, 1]
    assert len(splits.y_val) == 3


def _only(root: Path, keep: dict[str, int]) -> None:
    """Keep the first `keep[name]` training images of the named classes, drop other classes."""
    import shutil

    for split in ("train", "test"):
        for folder in (root / split).iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder)
            elif split == "train":
                for extra in sorted(p for p in folder.iterdir() if p.suffix != ".txt"
                                    and not p.name.startswith(".")
                                    and p.name != "Thumbs.db")[keep[folder.name]:]:
                    extra.unlink()


@pytest.mark.parametrize("case", ["one class", "one training image", "limit below classes",
                                  "newline in a class name", "not enough memory"])
def test_degenerate_datasets_are_one_line_naming_the_class(case, own_folder, tmp_path,
                                                          monkeypatch):
    import shutil

    root = Path(shutil.copytree(own_folder, tmp_path / "d"))
    args, needle = [], ""
    if case == "one class":
        _only(root, {"café": 30})
        needle = "only one class ('café')"
    elif case == "one training image":
        _only(root, {"café": 30, "猫": 1})
        needle = "train/猫: class has 1 training image; at least 2 are needed"
    elif case == "limit below classes":
        args, needle = ["--limit", "2"], "--limit 2 is fewer than the 3 classes"
    elif case == "newline in a class name":
        for split in ("train", "test"):
            (root / split / "café").rename(root / split / "ca\nfé")
        needle = "class name has a newline or control character"
    else:
        monkeypatch.setattr(data, "available_memory", lambda: 1000)
        needle = "only 0.0 GB of memory is available"
    result = invoke("train", "--data", str(root), "--artifacts", str(tmp_path / "a"),
                    "--epochs", "1", *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("edgefire: error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not (tmp_path / "a" / "trained.h5").exists()


def test_two_classes_train_a_two_way_classifier(own_folder, tmp_path):
    import shutil

    root = Path(shutil.copytree(own_folder, tmp_path / "two"))
    _only(root, {"café": 30, "猫": 30})
    folder = tmp_path / "a"
    result = invoke("train", "--data", str(root), "--artifacts", str(folder), "--epochs", "1",
                    "--batch-size", "16", "--image-size", "24")
    assert result.exit_code == 0, result.output
    train = json.loads((folder / "train.json").read_text())
    assert train["classes"] == ["café", "猫"] and train["input"]["size"] == [24, 24]
    assert train["parameters"] == 122_986 - 8 * (256 + 1)  # conv10 has 2 filters


def test_image_size_outside_the_architecture_range_is_refused(tmp_path):
    result = invoke("train", "--image-size", "4", "--artifacts", str(tmp_path))
    assert result.exit_code == 2
    assert "--image-size 4 is not supported by squeezenet (from 8 to 512)" in result.output


@pytest.fixture(scope="session")
def built64(own_folder, tmp_path_factory) -> Path:
    """A whole build at 64 pixels on the photos (made once per test run)."""
    def make(folder):
        result = invoke("build", "--data", str(own_folder), "--image-size", "64", *TINY_TRAIN,
                        "--sparsity", "0", "--max-drop", "100", "--artifacts",
                        str(folder / "artifacts"))
        assert result.exit_code == 0, result.output

    return made_once(tmp_path_factory, "built64", make) / "artifacts"


def test_a_build_at_64_carries_the_size_and_names_everywhere(built64, own_folder):
    report = json.loads((built64 / "report.json").read_text())
    assert report["input"]["size"] == [64, 64] and report["classes"] == ["café", "chat noir", "猫"]
    assert (built64 / "labels.txt").read_text(encoding="utf-8") == "café\nchat noir\n猫\n"
    train = json.loads((built64 / "train.json").read_text())
    assert train["input"]["size"] == [64, 64]
    assert train["parameters"] == 122_986 - 7 * (256 + 1)  # conv10 has 3 filters, not 10
    assert train["class_counts"]["test"] == {"café": 8, "chat noir": 8, "猫": 8}
    for row in report["artifacts"]:
        assert len(row["confusion"]) == 3 and sum(map(sum, row["confusion"])) == 24
        hits = sum(row["confusion"][i][i] for i in range(3))
        assert hits / 24 == pytest.approx(row["accuracy"])
    int8 = runtimes.open_model(built64 / "squeezenet_int8.tflite")
    assert int8.pixels_shape() == [64, 64, 3] and int8.input_size == 64
    assert "Confusion matrix of squeezenet_int8.tflite" in (built64 / "report.md").read_text()
    assert (built64 / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_report_accuracy_is_what_an_independent_runtime_measures_with_the_report_recipe(
        built64, own_folder):
    """Preprocess as report.json says (resize, normalize, the file's quantization) by hand."""
    from ai_edge_litert.interpreter import Interpreter

    report = json.loads((built64 / "report.json").read_text())
    size, norm = report["input"]["size"][0], report["input"]["normalize"]
    interpreter = Interpreter(model_path=str(built64 / "squeezenet_int8.tflite"))
    interpreter.allocate_tensors()
    tensor = interpreter.get_input_details()[0]
    scale, zero = tensor["quantization"]
    right = total = 0
    for label, name in enumerate(report["classes"]):
        for file in sorted((own_folder / "test" / name).glob("[0-9]*")):
            if file.suffix == ".txt":
                continue
            with Image.open(file) as image:
                pixels = contract.resize(data._rgb(image), size)
            x = (pixels.astype(np.float32) - norm["mean"]) / norm["std"]
            q = np.clip(np.round(x / scale + zero), 0, 255).astype(np.uint8)
            interpreter.set_tensor(tensor["index"], q[None])
            interpreter.invoke()
            out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            right += int(np.argmax(out) == label)
            total += 1
    int8 = next(r for r in report["artifacts"] if r["name"] == "squeezenet_int8.tflite")
    assert total == 24 and right / total == pytest.approx(int8["accuracy"])


def test_predict_answers_with_class_names_for_files_and_folders(built64, own_folder):
    files = sorted((own_folder / "test" / "猫").glob("00[0-5].*"))
    assert {f.suffix for f in files} == {s for s, _ in FORMATS}
    result = invoke("predict", *map(str, files), str(own_folder / "test" / "café"),
                    "--artifacts", str(built64))
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.strip().splitlines()]
    assert len(lines) == 6 + 8 and all(len(parts) == 3 for parts in lines)
    assert {parts[1] for parts in lines} <= {"café", "chat noir", "猫"}
    result = invoke("predict", str(files[0]), "--artifacts", str(built64), "--json", "--top",
                    "3", "--model", str(built64 / "squeezenet_float32.onnx"))
    answer = json.loads(result.output)
    assert answer[0]["file"] == str(files[0]) and len(answer[0]["top"]) == 3
    assert sum(t["score"] for t in answer[0]["top"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("model", ["squeezenet_int8.tflite", "trained.h5",
                                   "squeezenet_int8.onnx"])
def test_predict_gives_the_labels_the_report_counted(built64, own_folder, model):
    """Every test image through `predict`: the confusion matrix of its answers is the one
    report.json holds for that file."""
    report = json.loads((built64 / "report.json").read_text())
    classes = report["classes"]
    folders = [str(own_folder / "test" / name) for name in classes]
    result = invoke("predict", *folders, "--artifacts", str(built64), "--model",
                    str(built64 / model), "--json")
    assert result.exit_code == 0, result.output
    confusion = np.zeros((len(classes), len(classes)), int)
    for answer in json.loads(result.output):
        truth = classes.index(Path(answer["file"]).parent.name)
        confusion[truth, classes.index(answer["top"][0]["label"])] += 1
    row = next(r for r in report["artifacts"] if r["name"] == model)
    assert confusion.sum() == report["dataset"]["test_images"]
    assert confusion.tolist() == row["confusion"]


def test_predict_on_a_file_that_is_not_an_image_is_one_line(built64, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    result = invoke("predict", str(bad), "--artifacts", str(built64))
    assert result.exit_code == 2 and "unreadable or corrupt image" in result.output
    assert result.output.count("edgefire: error:") == 1


def _mediapipe(model: Path, files: list[Path]) -> list:
    done = subprocess.run([str(MEDIAPIPE_PYTHON), str(ROOT / "tests" / "mediapipe_classify.py"),
                           str(model), *map(str, files)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not MEDIAPIPE_PYTHON.exists(),
                    reason="MediaPipe lives in its own venv, made by `make test`")
def test_mediapipe_and_predict_agree_on_non_square_photos(built64, tmp_path):
    files = []
    for i, (size, colour) in enumerate([((500, 375), COLOURS["猫"]),
                                        ((40, 90), COLOURS["café"]),
                                        ((64, 48), COLOURS["chat noir"]),
                                        ((333, 101), COLOURS["café"])]):
        files.append(tmp_path / f"photo{i}.png")
        photo(size, colour, 100 + i).save(files[-1])
    answers = _mediapipe(built64 / "squeezenet_int8.tflite", files)
    result = invoke("predict", *map(str, files), "--artifacts", str(built64), "--json")
    predicted = json.loads(result.output)
    for (_, name, score), ours in zip(answers, predicted, strict=True):
        assert name == ours["top"][0]["label"]
        assert score == pytest.approx(ours["top"][0]["score"], abs=0.02)
