"""Where training runs (`--distribute`): TensorFlow's own distribution strategies.

- `none`: one process, TensorFlow's default placement (a GPU if there is one).
- `mirrored`: `MirroredStrategy` over this machine's GPUs, or its CPU devices without GPUs.
- `multi-worker`: `MultiWorkerMirroredStrategy`, configured by the standard `TF_CONFIG`;
  every worker runs the same command, worker 0 (the chief) writes the artifacts and the
  others write theirs to a temporary folder, removed at the end.
- `auto`: `mirrored` when two or more GPUs are visible, otherwise `none`.

`--batch-size` is the global batch: each of the N replicas computes 1/N of it and the
gradients are summed, so the recipe (learning rate included) is the same at any N.
`EDGEFIRE_CPU_DEVICES=N` splits the CPU into N logical devices, so `mirrored` can be tried
and tested without GPUs; it must be set before the process starts TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefire.checks import choice
from edgefire.errors import EdgefireError
from edgefire.tfenv import tensorflow

MODES = ("auto", "none", "mirrored", "multi-worker")
CPU_DEVICES = "EDGEFIRE_CPU_DEVICES"
CLUSTER_WAIT = 600  # seconds a worker waits for the others to start before giving up
HEALTH_INTERVAL = 10  # seconds between the checks that notice a worker has died
PEER_POLL = 0.5  # seconds between two looks for the workers not yet listening


@dataclass
class Placement:
    """The strategy chosen for this process and the facts about it."""

    mode: str  # as resolved: none, mirrored or multi-worker
    strategy: object
    devices: list[str]
    workers: int = 1
    task_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self, batch_size: int) -> dict:
        """What train.json records and the line a user reads."""
        return {"strategy": self.mode, "devices": self.devices, "replicas": self.replicas,
                "workers": self.workers, "task_index": self.task_index,
                "global_batch": batch_size, "replica_batch": batch_size // self.replicas,
                "learning_rate_scaling": "none (the batch is global)"}

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.replicas:
            raise EdgefireError(f"--batch-size {batch_size} does not split evenly over "
                                f"{self.replicas} replicas")

    @contextlib.contextmanager
    def output_folder(self, folder: Path):
        """`folder` on the chief; a temporary folder, removed afterwards, on other workers."""
        if self.is_chief:
            yield folder
            return
        temporary = Path(tempfile.mkdtemp(prefix=f"edgefire-worker{self.task_index}-"))
        try:
            yield temporary
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def from_chief(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The chief's values of `arrays` on every worker (the others pass arrays of the
        same shapes): one all-reduce of them all, to which only the first replica (on the
        chief) contributes."""
        if self.workers == 1:
            return arrays
        tf = tensorflow()
        packed = tf.constant(np.concatenate([np.ravel(a) for a in arrays]), tf.float32)

        @tf.function
        def share(values):
            context = tf.distribute.get_replica_context()
            keep = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32)
            return context.all_reduce("sum", values * keep)

        shared = self.strategy.run(share, args=(packed,))
        flat = np.asarray(self.strategy.experimental_local_results(shared)[0])
        ends = np.cumsum([np.size(a) for a in arrays])[:-1]
        return [part.reshape(np.shape(a)).astype(np.asarray(a).dtype)
                for part, a in zip(np.split(flat, ends), arrays, strict=True)]


_placed: Placement | None = None


def place(mode: str) -> Placement:
    """The placement for `mode`, made once per process (a multi-worker strategy can only be
    made before TensorFlow runs anything)."""
    global _placed
    choice(mode, MODES, "--distribute")
    resolved = _resolve(mode)
    if resolved == "multi-worker":
        tf_config()  # its errors first: they are what a user has to fix
    if _placed is None or _placed.mode != resolved:
        if _placed is not None and "multi-worker" in (_placed.mode, resolved):
            raise EdgefireError("--distribute multi-worker cannot be mixed with another "
                                "strategy in one process")
        _placed = _make(resolved)
    return _placed


def _resolve(mode: str) -> str:
    if mode != "auto":
        return mode
    return "mirrored" if len(tensorflow().config.list_physical_devices("GPU")) >= 2 else "none"


def _make(mode: str) -> Placement:
    tf = tensorflow()
    if mode != "multi-worker":
        _split_cpu()
    if mode == "none":
        strategy = tf.distribute.get_strategy()
        return Placement("none", strategy, [_default_device()])
    if mode == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return Placement("mirrored", tf.distribute.MirroredStrategy(devices), devices)
    cluster = tf_config()
    from tensorflow.python.distribute import collective_all_reduce_strategy as collective

    # Bounded waits (TensorFlow's defaults: forever for the cluster, 30 s between checks);
    # the class attributes are how TensorFlow's own tests set them.
    collective.CollectiveAllReduceExtended._check_health_initial_timeout = CLUSTER_WAIT
    collective.CollectiveAllReduceExtended._check_health_interval = HEALTH_INTERVAL
    _wait_for_peers(cluster)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError, tf.errors.OpError) as exc:
        raise EdgefireError(f"multi-worker: cannot start ({str(exc).splitlines()[0]})") from None
    devices = list(strategy.extended.worker_devices)
    return Placement("multi-worker", strategy, devices, len(cluster["cluster"]["worker"]),
                     int(cluster["task"]["index"]))


def _wait_for_peers(cluster: dict) -> None:
    """Return once every other worker is listening, holding this worker's port meanwhile.

    TensorFlow's own wait for the cluster, inside `MultiWorkerMirroredStrategy()`, holds the
    interpreter lock and replaces the SIGTERM handler: a worker stuck there ignores SIGTERM and
    Ctrl-C. Waiting here first, in Python, leaves TensorFlow a wait of moments.
    """
    workers, index = cluster["cluster"]["worker"], int(cluster["task"]["index"])
    port = int(_host_port(workers[index])[1])
    try:
        listener = (socket.create_server(("", port), family=socket.AF_INET6,
                                         dualstack_ipv6=True)
                    if socket.has_dualstack_ipv6() else socket.create_server(("", port)))
    except OSError as exc:
        raise EdgefireError(f"multi-worker: cannot listen on port {port} ({exc.strerror})"
                            ) from None
    waiting = [a for i, a in enumerate(workers) if i != index]
    deadline, said = time.monotonic() + CLUSTER_WAIT, False
    with listener:
        while waiting := [a for a in waiting if not _listening(a)]:
            if time.monotonic() > deadline:
                raise EdgefireError(f"multi-worker: {', '.join(waiting)} did not start within "
                                    f"{CLUSTER_WAIT} s")
            if not said:
                print(f"  multi-worker: waiting for {', '.join(waiting)}", flush=True)
                said = True
            time.sleep(PEER_POLL)


def _listening(address: str) -> bool:
    host, port = _host_port(address)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _default_device() -> str:
    tf = tensorflow()
    gpus = tf.config.list_logical_devices("GPU")
    return (gpus or tf.config.list_logical_devices("CPU"))[0].name


def _split_cpu() -> None:
    """Honour EDGEFIRE_CPU_DEVICES, before TensorFlow starts its devices."""
    count = os.environ.get(CPU_DEVICES)
    if not count:
        return
    if not count.isdigit() or int(count) < 1:
        raise EdgefireError(f"{CPU_DEVICES}={count!r}: expected a whole number >= 1")
    tf = tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
    except RuntimeError:  # TensorFlow has started its devices: fine if already split so
        pass
    started = len(tf.config.list_logical_devices("CPU"))
    if started != int(count):
        raise EdgefireError(f"{CPU_DEVICES}={count}: TensorFlow had already started with "
                            f"{started} CPU device(s)")


def tf_config() -> dict:
    """TF_CONFIG, checked: a cluster with a worker list and this process's task in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise EdgefireError("--distribute multi-worker needs the TF_CONFIG environment "
                            "variable (see README: Scaling out)")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = task["index"]
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(index)
    except (ValueError, KeyError, TypeError):
        raise EdgefireError('TF_CONFIG is not valid: expected {"cluster": {"worker": '
                            '["host:port", ...]}, "task": {"type": "worker", "index": N}}'
                            ) from None
    if not isinstance(workers, list) or not workers or task.get("type") != "worker" \
            or not 0 <= index < len(workers):
        raise EdgefireError(f"TF_CONFIG: task {task} is not one of the {len(workers)} "
                            "workers of its cluster")
    for address in workers:
        check_address(address)
    if not all(_loopback(a) for a in workers):
        print("  ! multi-worker: TensorFlow's gRPC server listens on every interface without "
              "authentication; run it on a trusted network only", flush=True)
    return config


def check_address(address) -> None:
    """A worker address is "host:port" with a port of 1-65535."""
    host, port = _host_port(address) if isinstance(address, str) else ("", "")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EdgefireError(f"TF_CONFIG: worker address {address!r} is not host:port with a "
                            "port from 1 to 65535")


def _loopback(address: str) -> bool:
    host = _host_port(address)[0]
    return host in ("localhost", "::1") or host.startswith("127.")


def _host_port(address: str) -> tuple[str, str]:
    """The host (IPv6 brackets removed) and the port of "host:port"."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port
