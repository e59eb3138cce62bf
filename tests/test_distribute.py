"""`--distribute`: mirrored over logical CPU devices and multi-worker over loopback ports.

Each run is a fresh `edgefire` process (a strategy and logical devices must be set up before
TensorFlow starts); every process is bounded in time and ended by the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire.cli import app

pytestmark = pytest.mark.slow
EDGEFIRE = [sys.executable, "-m", "edgefire.cli"]
TINY = ["--learning-rate", "0.02", "--seed", "1"]
TIMEOUT = 240


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start(args: list[str], log: Path, errors: Path | None = None, **env) -> subprocess.Popen:
    """The command running, its output in `log` (and its errors too, unless `errors`)."""
    return subprocess.Popen([*EDGEFIRE, *args], stdout=log.open("w"),
                            stderr=errors.open("w") if errors else subprocess.STDOUT,
                            env={**os.environ, **env}, start_new_session=True)


def finish(processes: list[subprocess.Popen]) -> list[int]:
    """Exit codes, every process ended within the time bound."""
    codes = []
    try:
        for process in processes:
            codes.append(process.wait(timeout=TIMEOUT))
    finally:
        stop(processes)
    return codes


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill whatever of `processes` still runs, with its children."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def two_workers(tmp_path: Path, image_folder: Path, epochs: int, batch: int, name: str):
    ports = free_ports(2)
    folders = [tmp_path / f"{name}{i}" for i in range(2)]
    logs = [tmp_path / f"{name}{i}.log" for i in range(2)]
    args = ["train", "--data", str(image_folder), "--epochs", str(epochs), "--batch-size",
            str(batch), "--distribute", "multi-worker", *TINY]
    workers = [start([*args, "--artifacts", str(folders[i])], logs[i],
                     TF_CONFIG=tf_config(ports, i)) for i in range(2)]
    return workers, folders, logs


def test_mirrored_over_two_logical_cpus_splits_each_batch(tmp_path, image_folder):
    folder = tmp_path / "mirrored"
    log = tmp_path / "mirrored.log"
    run = start(["train", "--data", str(image_folder), "--epochs", "1", "--batch-size", "32",
                 "--distribute", "mirrored", "--artifacts", str(folder), *TINY], log,
                EDGEFIRE_CPU_DEVICES="2")
    assert finish([run]) == [0], log.read_text()[-2000:]
    meta = json.loads((folder / "train.json").read_text())
    assert meta["parameters"] == 122_986
    placed = meta["distribute"]
    assert placed["strategy"] == "mirrored" and placed["replicas"] == 2
    assert placed["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert placed["global_batch"] == 32 and placed["replica_batch"] == 16


def test_a_killed_worker_ends_the_other_with_one_line_and_a_rerun_resumes(tmp_path,
                                                                          image_folder):
    workers, folders, logs = two_workers(tmp_path, image_folder, 3, 16, "run")
    deadline = time.monotonic() + TIMEOUT
    while "Epoch 1/3" not in logs[0].read_text():
        assert time.monotonic() < deadline and workers[0].poll() is None, logs[0].read_text()
        time.sleep(0.2)
    while not (folders[0] / "train_checkpoint.json").exists():  # epoch 1 is saved
        assert time.monotonic() < deadline, logs[0].read_text()
        time.sleep(0.1)
    os.killpg(workers[1].pid, signal.SIGKILL)
    killed = time.monotonic()
    codes = finish(workers)
    assert codes[0] == 2 and time.monotonic() - killed < 120
    errors = [line for line in logs[0].read_text().splitlines()
              if line.startswith("edgefire: error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0]
    assert "Traceback" not in logs[0].read_text()
    assert not (folders[0] / "trained.h5").exists()

    workers, folders, logs = two_workers(tmp_path, image_folder, 3, 16, "run")
    assert finish(workers) == [0, 0], logs[0].read_text()[-2000:]
    meta = json.loads((folders[0] / "train.json").read_text())
    assert "resuming train after epoch 1" in logs[0].read_text()
    assert meta["epochs_run"] == 2 and len(meta["history"]["loss"]) == 3


def test_sigterm_ends_a_worker_that_waits_for_its_peers(tmp_path, image_folder):
    log = tmp_path / "alone.log"
    alone = start(["train", "--data", str(image_folder), "--epochs", "1", "--distribute",
                   "multi-worker", "--artifacts", str(tmp_path / "alone")], log,
                  TF_CONFIG=tf_config(free_ports(2), 0))
    deadline = time.monotonic() + TIMEOUT
    while "waiting for" not in log.read_text():
        assert time.monotonic() < deadline and alone.poll() is None, log.read_text()
        time.sleep(0.2)
    time.sleep(1)
    alone.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert finish([alone]) == [143] and time.monotonic() - sent < 10, log.read_text()
    assert "terminated (SIGTERM)" in log.read_text() and "Traceback" not in log.read_text()
    assert not (tmp_path / "alone").exists()


@pytest.mark.parametrize("worker", [0, 1], ids=["chief", "other"])
def test_sigterm_ends_a_training_worker_within_10_s(worker, tmp_path, image_folder):
    workers, folders, logs = two_workers(tmp_path, image_folder, 50, 16, "run")
    deadline = time.monotonic() + TIMEOUT
    while "Epoch 2/50" not in logs[0].read_text():  # the servers are up and training
        assert time.monotonic() < deadline and workers[0].poll() is None, logs[0].read_text()
        time.sleep(0.2)
    workers[worker].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code = workers[worker].wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    waited = time.monotonic() - sent
    stop(workers)  # the survivor's noticing is the killed-worker test's
    assert code == 143 and waited < 10, (code, waited, logs[worker].read_text()[-2000:])
    assert "terminated (SIGTERM)" in logs[worker].read_text()
    assert "Traceback" not in logs[worker].read_text()


def test_a_worker_whose_port_is_taken_is_one_line(tmp_path, image_folder):
    with socket.create_server(("", 0)) as taken:
        ports = [taken.getsockname()[1], *free_ports(1)]
        log = tmp_path / "taken.log"
        run = start(["train", "--data", str(image_folder), "--distribute", "multi-worker",
                     "--artifacts", str(tmp_path / "taken")], log,
                    TF_CONFIG=tf_config(ports, 0))
        assert finish([run]) == [2], log.read_text()
    assert f"edgefire: error: multi-worker: cannot listen on port {ports[0]}" in log.read_text()


@pytest.mark.parametrize("value, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     "is not one of the 1 workers"),
    ('{"cluster": {"worker": ["localhost:70000"]}, "task": {"type": "worker", "index": 0}}',
     "port from 1 to 65535"),
    ('{"cluster": {"worker": [12345]}, "task": {"type": "worker", "index": 0}}',
     "worker address 12345 is not host:port"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0.0}}',
     "TF_CONFIG is not valid"),
])
def test_a_missing_or_malformed_tf_config_is_one_line(tmp_path, monkeypatch, value, message):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    result = CliRunner().invoke(app, ["train", "--distribute", "multi-worker", "--artifacts",
                                      str(tmp_path / "a")])
    assert result.exit_code == 2 and message in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "a").exists()


def test_a_batch_that_does_not_split_over_the_replicas_is_one_line(tmp_path, image_folder):
    log = tmp_path / "odd.log"
    run = start(["train", "--data", str(image_folder), "--batch-size", "33", "--distribute",
                 "mirrored", "--artifacts", str(tmp_path / "odd")], log,
                EDGEFIRE_CPU_DEVICES="2")
    assert finish([run]) == [2]
    assert "edgefire: error: --batch-size 33 does not split evenly over 2 replicas" in \
        log.read_text()


def test_a_two_worker_build_leaves_a_complete_verified_folder_on_the_chief(tmp_path,
                                                                           image_folder):
    ports = free_ports(2)
    folders = [tmp_path / f"build{i}" for i in range(2)]
    logs = [tmp_path / f"build{i}.log" for i in range(2)]
    args = ["build", "--quantize", "int8", "--data", str(image_folder), "--epochs", "2",
            "--batch-size", "16", "--prune-epochs", "1", "--distribute", "multi-worker", *TINY]
    workers = [start([*args, "--artifacts", str(folders[i])], logs[i],
                     TF_CONFIG=tf_config(ports, i)) for i in range(2)]
    assert finish(workers) == [0, 0], logs[0].read_text()[-2000:] + logs[1].read_text()[-2000:]
    report = json.loads((folders[0] / "report.json").read_text())
    assert report["passed"] and len(report["artifacts"]) == 5
    meta = json.loads((folders[0] / "train.json").read_text())
    assert meta["epochs_run"] == 2
    placed = meta["distribute"]
    assert (placed["strategy"], placed["workers"], placed["replicas"]) == ("multi-worker", 2, 2)
    assert placed["replica_batch"] == 8  # each worker computes half of every 16-image step
    assert not folders[1].exists()  # the other worker wrote nothing under its --artifacts
    assert "8 images per replica of each 16-image step" in logs[1].read_text()
    assert "worker 1: trained with the chief" in logs[1].read_text()
    assert "the chief builds and verifies the rest" in logs[1].read_text()


def test_prune_fine_tunes_mirrored_over_two_logical_cpus(tmp_path, trained_folder, copy_of):
    folder = copy_of(trained_folder)
    log, errors = tmp_path / "prune.log", tmp_path / "prune.err"
    run = start(["prune", "--epochs", "1", "--distribute", "mirrored", "--artifacts",
                 str(folder)], log, errors, EDGEFIRE_CPU_DEVICES="2")
    assert finish([run]) == [0], errors.read_text()[-2000:]
    assert errors.read_text() == ""  # TensorFlow's start-up and tf.data's lines silenced
    result = json.loads((folder / "prune.json").read_text())
    assert result["distribute"]["replicas"] == 2 and result["distribute"]["replica_batch"] == 64
    assert abs(result["sparsity"]["overall"] - 0.4) < 0.02


def test_prune_refuses_multi_worker_with_one_line(trained_folder, copy_of):
    result = CliRunner().invoke(app, ["prune", "--distribute", "multi-worker", "--artifacts",
                                      str(copy_of(trained_folder))])
    assert result.exit_code == 2 and "prune runs on one machine" in result.output
