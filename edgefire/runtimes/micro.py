"""TFLite Micro, the interpreter of microcontrollers, run in a child process.

The `tflite-micro` package's Python interpreter is TFLite Micro's reference kernels built for
the host. It reports its errors and its arena use only on stderr, from C++, and it can take
the whole process down (a too-small arena segfaults), so every run is a child process: this
file run as a script (it imports nothing of edgefire, so the child starts in well under a
second), given the model's input tensors and writing its raw output tensors. The parent reads
the op TFLite Micro lacks, or the arena bytes its allocation recorder counted, from the
child's stderr.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARENA = 64 << 20  # generous: the recorder reports what the model actually used of it
TIMEOUT = 3600  # seconds for one batch: a bound, never reached by the models edgefire builds
_ARENA_LINE = re.compile(r"Arena allocation total (\d+) bytes")


class MicroRunner:
    """A `.tflite` in TFLite Micro: one image per invoke, as on a board."""

    def __init__(self, path: Path, threads: int | None, contract):
        from edgefire.runtimes.litert import TFLiteIO, tflite_io

        self.path, self.contract = path, contract
        self.io: TFLiteIO = tflite_io(path)
        self.input_size = self.io.input_size
        self.arena_bytes: int | None = None
        self.ms_per_image: float | None = None

    def run(self, pixels: np.ndarray) -> np.ndarray:
        scores, self.arena_bytes, self.ms_per_image = run_tensors(
            self.path, self.io.prepare(pixels, self.contract))
        return self.io.dequantize(scores)


def run_tensors(model: Path, tensors: np.ndarray) -> tuple[np.ndarray, int, float]:
    """The raw output tensor TFLite Micro gives for each input tensor, the arena bytes it
    used and the milliseconds per image."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(inputs, tensors)
        child = _run_child(model, inputs, outputs)
        scores = np.load(outputs)
    arena = int(_ARENA_LINE.search(child.stderr).group(1))
    return scores, arena, float(child.stdout.split()[-1])


def _run_child(model: Path, inputs: Path, outputs: Path) -> subprocess.CompletedProcess:
    from edgefire.errors import EdgefireError

    # -P: the script's folder (edgefire/) must not shadow modules of the standard library
    command = [sys.executable, "-P", __file__, str(model), str(inputs), str(outputs)]
    try:
        child = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise EdgefireError(f"{model}: TFLite Micro took over {TIMEOUT} s") from None
    if child.returncode != 0 or not _ARENA_LINE.search(child.stderr):
        raise EdgefireError(f"{model}: TFLite Micro cannot run it ({_reason(child)})")
    return child


def _reason(child: subprocess.CompletedProcess) -> str:
    """The line of the child's stderr that says why, or how it ended."""
    lines = [line.strip() for line in child.stderr.splitlines() if line.strip()]
    missing = [line for line in lines if line.startswith("Didn't find op")]
    if missing:
        return missing[0]
    if child.returncode < 0:
        return f"crashed with signal {-child.returncode}"
    return lines[-1][:200] if lines else f"exit code {child.returncode}"


def _child(model: str, inputs: str, outputs: str) -> None:
    """Run every input tensor through TFLite Micro; print ms per image, then the arena use."""
    from tflite_micro.python.tflite_micro import runtime

    images = np.load(inputs)
    interpreter = runtime.Interpreter.from_file(model, arena_size=ARENA)
    scores = []
    start = time.perf_counter()
    for image in images:
        interpreter.set_input(image[None], 0)
        interpreter.invoke()
        scores.append(interpreter.get_output(0)[0].copy())
    seconds = time.perf_counter() - start
    np.save(outputs, np.stack(scores))
    print(f"ms_per_image {seconds / max(len(images), 1) * 1000:.4f}", flush=True)
    interpreter.print_allocations()


if __name__ == "__main__":
    _child(*sys.argv[1:4])
