"""Arm Ethos-U NPU estimates: the int8 TFLite compiled by Vela (`ethos-u-vela`, the `npu`
extra) for one accelerator configuration, into `npu/`.

Vela writes the compiled `.tflite` (the NPU's command stream in a custom operator, what
TFLite Micro runs on an Ethos-U board) and a summary of its performance model: cycles at the
configuration's clock, SRAM and flash used, operators placed on the NPU and on the CPU.
Those are Vela's estimates for the default system configuration of the accelerator, never
measurements, and the report labels them so. Vela runs in a child process: it prints to
stdout and may exit on a model it cannot compile.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from edgefire import layout
from edgefire.errors import EdgefireError

TARGETS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
           "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
           "ethos-u85-2048")
FOLDER = layout.NPU
TIMEOUT = 600  # seconds: Vela compiles edgefire's models in about one
_VELA = "import sys; from ethosu.vela.vela import main; sys.exit(main())"
_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+)", re.MULTILINE)
_CPU_OP = re.compile(r"^Warning \(supported operators\) operator: (\w+),", re.MULTILINE)


def check_available() -> None:
    """One line when Vela is not installed."""
    if importlib.util.find_spec("ethosu") is None:
        raise EdgefireError("--npu: Arm's Vela compiler is not installed "
                            "(pip install 'edgefire[npu]')")


def compile_model(model: Path, target: str) -> tuple[dict[str, bytes], dict]:
    """Vela's output files (by name) for `model` on `target`, and the report's `npu` object."""
    check_available()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", _VELA, str(model), "--accelerator-config", target,
                   "--output-dir", tmp]
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise EdgefireError(f"{model}: Vela took over {TIMEOUT} s for {target}") from None
        summaries = sorted(Path(tmp).glob("*_summary_*.csv"))
        if run.returncode != 0 or not summaries:
            why = (run.stderr.strip() or run.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise EdgefireError(f"{model}: Vela cannot compile it for {target} ({why[0][:200]})")
        files = {path.name: path.read_bytes() for path in Path(tmp).iterdir()}
        with summaries[0].open(newline="") as summary:
            row = next(csv.DictReader(summary))
    return files, estimate(row, run.stdout, target)


def estimate(row: dict, output: str, target: str) -> dict:
    """The report's `npu` object from Vela's summary row and its printed output."""
    counts = {kind: int(n) for kind, n in _COUNT.findall(output)}
    cpu_ops = list(dict.fromkeys(_CPU_OP.findall(output)))
    clock = float(row["core_clock"])
    kib = 1024
    return {
        "target": target, "vela_version": importlib.metadata.version("ethos-u-vela"),
        "estimate": "Vela's performance model, not a measurement",
        "system_config": row["system_config"], "memory_mode": row["memory_mode"],
        "clock_mhz": clock / 1e6, "cycles": int(float(row["cycles_total"])),
        "inference_ms_estimate": round(float(row["cycles_total"]) / clock * 1000, 4),
        "sram_bytes": round(float(row["sram_memory_used"]) * kib),
        "flash_bytes": round((float(row["off_chip_flash_memory_used"])
                              + float(row["on_chip_flash_memory_used"])) * kib),
        "dram_bytes": round(float(row["dram_memory_used"]) * kib),  # U65/U85: weights there
        "npu_operators": counts.get("NPU", 0), "cpu_operators": counts.get("CPU", 0),
        "cpu_operator_types": cpu_ops}
