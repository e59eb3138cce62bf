"""Data sources, splits, the cache, and every bad-input case with its one line and exit 2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgefire import data
from edgefire.cli import app
from edgefire.errors import EdgefireError
from tests import synthetic


def test_image_folder_loads_uint8_nhwc_with_sorted_class_names(image_folder):
    ds = data.load(str(image_folder))
    assert ds.x_train.shape == (600, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (200, 32, 32, 3)
    assert ds.classes == synthetic.CLASSES
    assert set(ds.y_train) == set(range(10))


def test_image_folder_pixels_survive_png_round_trip(image_folder):
    ds = data.load(str(image_folder))
    expected, labels = synthetic.images(60, 1)
    assert np.array_equal(ds.x_train, expected) and np.array_equal(ds.y_train, labels)


def test_cifar_folder_and_archive_give_the_same_arrays(cifar_folder, cifar_archive):
    folder, archive = data.load(str(cifar_folder)), data.load(str(cifar_archive))
    assert folder.x_train.shape == (500, 32, 32, 3)
    assert np.array_equal(folder.x_train, archive.x_train)
    assert np.array_equal(folder.y_test, archive.y_test)
    assert folder.classes == archive.classes == synthetic.CLASSES
    expected, _ = synthetic.images(10, 4)
    assert np.array_equal(folder.x_test, expected)


def test_second_load_comes_from_cache(image_folder, monkeypatch):
    first = data.load(str(image_folder))
    assert list(data.cache_dir().glob("*.npz"))

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_load_path", no_decoding)
    again = data.load(str(image_folder))
    assert np.array_equal(first.x_train, again.x_train) and again.classes == first.classes


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    root = synthetic.write_image_folder(tmp_path / "d", 2, 1)
    gray = next((root / "train" / "cat").iterdir())
    Image.open(gray).convert("L").save(gray)
    rgba = next((root / "test" / "dog").iterdir())
    Image.open(rgba).convert("RGBA").save(rgba)
    ds = data.load(str(root))
    assert ds.x_train.shape[-1] == 3 and ds.x_test.shape[-1] == 3


def test_validation_split_is_balanced_seeded_and_disjoint(image_folder):
    ds = data.load(str(image_folder))
    a = data.split(ds, val_size=5000, seed=3)
    b = data.split(ds, val_size=5000, seed=3)
    assert np.array_equal(a.val_indices, b.val_indices)
    assert len(a.y_val) == 60  # at most a tenth of train
    assert np.bincount(a.y_val).tolist() == [6] * 10
    assert not set(a.val_indices) & set(a.train_indices)
    assert len(a.y_train) + len(a.y_val) == len(ds.y_train)


def test_limit_takes_a_class_balanced_subset(image_folder):
    splits = data.split(data.load(str(image_folder)), 5000, 0, limit=100)
    assert np.bincount(splits.y_train).tolist() == [10] * 10


# --- bad input: one line, exit code 2, no traceback -----------------------------------------


def _train_fails(source, *needles: str) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(source), "--epochs", "1",
                                      "--artifacts", str(Path(source).parent / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgefire: error:"), result.output
    for needle in needles:
        assert needle in lines[0]


def _broken_copy(image_folder, tmp_path) -> Path:
    return Path(shutil.copytree(image_folder, tmp_path / "broken"))


def test_missing_path(tmp_path):
    _train_fails(tmp_path / "nowhere", "nowhere", "does not exist")


def test_unrecognised_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _train_fails(tmp_path / "notes.txt", "notes.txt", "not a recognised data source")


def test_missing_test_folder(image_folder, tmp_path):
    root = _broken_copy(image_folder, tmp_path)
    shutil.rmtree(root / "test")
    _train_fails(root, "test", "missing")


def test_empty_train_folder(image_folder, tmp_path):
    root = _broken_copy(image_folder, tmp_path)
    shutil.rmtree(root / "train")
    (root / "train").mkdir()
    _train_fails(root, "train", "empty")


def test_class_folders_differ(image_folder, tmp_path):
    root = _broken_copy(image_folder, tmp_path)
    shutil.rmtree(root / "test" / "frog")
    _train_fails(root, "differ", "frog")


def test_class_without_images(image_folder, tmp_path):
    root = _broken_copy(image_folder, tmp_path)
    for image in (root / "train" / "ship").iterdir():
        image.unlink()
    _train_fails(root, "ship", "no images")


def test_corrupt_image_is_named(image_folder, tmp_path):
    root = _broken_copy(image_folder, tmp_path)
    bad = root / "train" / "deer" / "0250.png"
    bad.write_bytes(b"\x89PNG not really")
    _train_fails(root, "0250.png", "corrupt")


def test_truncated_archive(cifar_archive, tmp_path):
    broken = tmp_path / "cifar-10-python.tar.gz"
    broken.write_bytes(cifar_archive.read_bytes()[:5000])
    _train_fails(broken, "cifar-10-python.tar.gz", "corrupt or truncated")


def test_corrupt_cifar_batch(cifar_folder, tmp_path):
    folder = Path(shutil.copytree(cifar_folder, tmp_path / "cifar-10-batches-py"))
    (folder / "data_batch_3").write_bytes(b"garbage")
    _train_fails(folder, "data_batch_3", "corrupt")


def test_failed_download_says_no_network_and_how_to_pass_a_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.keras cache to fall back on
    monkeypatch.setattr(data, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(EdgefireError, match="no network.*--data PATH"):
        data.load("cifar10")



def test_a_cifar_source_resized_beyond_memory_is_refused(cifar_folder, monkeypatch):
    from edgefire.errors import EdgefireError

    monkeypatch.setattr(data, "available_memory", lambda: 1000)
    with pytest.raises(EdgefireError, match=r"600 images at 96x96 need 0.0 GB decoded"):
        data.load(str(cifar_folder), 96)


def _rewrite(folder, name, change):
    import pickle

    batch = pickle.loads((folder / name).read_bytes())
    change(batch)
    (folder / name).write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("name, change, needle", [
    ("data_batch_2", lambda b: b.update({b"labels": [10] * len(b[b"labels"])}),
     "a label outside 0-9"),
    ("data_batch_2", lambda b: b.update({b"labels": [-1] * len(b[b"labels"])}),
     "a label outside 0-9"),
    ("test_batch", lambda b: b.update({b"labels": b[b"labels"][:-1]}), "labels for"),
    ("batches.meta", lambda b: b.update({b"label_names": 5}), "not a list of UTF-8 names"),
    ("batches.meta", lambda b: b.update({b"label_names": [b"\xff\xfe"] * 10}),
     "not a list of UTF-8 names"),
    ("batches.meta", lambda b: b[b"label_names"].__setitem__(0, b"air\nplane"),
     "a newline or control character"),
])
def test_a_cifar_batch_that_does_not_add_up_is_one_line(cifar_folder, tmp_path, name, change,
                                                        needle):
    import shutil

    folder = shutil.copytree(cifar_folder, tmp_path / "cifar-10-batches-py")
    _rewrite(folder, name, change)
    with pytest.raises(EdgefireError, match=needle):
        data.load(str(folder))


def _loop(path):
    path.symlink_to(path.name)


def _dangling(path):
    path.symlink_to(path.parent / "gone.png")


@pytest.mark.parametrize("make", [_loop, _dangling], ids=["symlink loop", "dangling symlink"])
def test_a_broken_symlink_in_a_class_folder_is_one_line(image_folder, tmp_path, make):
    import shutil

    folder = shutil.copytree(image_folder, tmp_path / "photos")
    make(folder / "train" / "cat" / "link.png")
    with pytest.raises(EdgefireError, match=r"link.png: a broken symbolic link"):
        data.load(str(folder))


def test_file_names_that_are_not_utf8_are_read_and_class_names_are_refused(image_folder,
                                                                          tmp_path):
    import os
    import shutil

    folder = shutil.copytree(image_folder, tmp_path / "photos")
    cat = folder / "train" / "cat"
    first = sorted(cat.iterdir())[0]
    shutil.copy(os.fsencode(first), os.path.join(os.fsencode(cat), b"caf\xe9.png"))
    assert data.source_fingerprint(str(folder))
    assert len(data.load(str(folder)).y_train) == len(data.load(str(image_folder)).y_train) + 1
    for split in ("train", "test"):
        shutil.copytree(os.fsencode(folder / split / "cat"),
                        os.path.join(os.fsencode(folder / split), b"d\xe9g"))
    with pytest.raises(EdgefireError, match="class folder name is not UTF-8"):
        data.load(str(folder))


def test_the_data_fingerprint_is_its_content_not_when_it_was_copied(image_folder, tmp_path):
    """A fresh clone on another machine sees the same data with new times: no retraining. The
    same bytes and size with one image changed is other data."""
    copied = Path(shutil.copytree(image_folder, tmp_path / "copied", copy_function=shutil.copy))
    image = sorted((copied / "train" / "cat").iterdir())[0]
    os.utime(image, (1, 1))
    assert data.source_fingerprint(str(copied)) == data.source_fingerprint(str(image_folder))
    content = bytearray(image.read_bytes())
    content[-1] ^= 0xFF
    image.write_bytes(bytes(content))
    assert data.source_fingerprint(str(copied)) != data.source_fingerprint(str(image_folder))
