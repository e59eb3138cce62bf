"""The firmware deliverables: the pack (`mcu/`), compiled with the system's C++ compiler and
checked against the int8 TFLite it was made from and against TFLite Micro itself; the
firmware gates; and Vela's Ethos-U NPU estimates (`npu/`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgefire import mcu, npu, report, tflite_file
from edgefire.cli import app
from edgefire.config import VerifyConfig
from edgefire.errors import EdgefireError
from edgefire.records import QuantizeRecord
from edgefire.runtimes import micro
from edgefire.stages import verify

MODEL = "squeezenet_int8.tflite"
CXX = shutil.which("g++") or shutil.which("c++")
needs_compiler = pytest.mark.skipif(CXX is None, reason="no C++ compiler on this machine")

# Writes g_model's bytes and the golden tables to files, and prints the settings and labels.
HARNESS = r"""
#include <cstdint>
#include <cstdio>
#include "golden.h"
#include "model_data.h"
#include "model_settings.h"

int main(int, char** argv) {
  FILE* model = std::fopen(argv[1], "wb");
  std::fwrite(g_model, 1, g_model_len, model);
  std::fclose(model);
  FILE* golden = std::fopen(argv[2], "wb");
  std::fwrite(g_golden_inputs, 1, sizeof(g_golden_inputs), golden);
  std::fwrite(g_golden_outputs, 1, sizeof(g_golden_outputs), golden);
  std::fclose(golden);
  std::printf("%d %d %d %d %d %d %d %d\n", kInputWidth, kInputHeight, kInputChannels,
              kNumClasses, kTensorArenaSize, kMeasuredArenaSize, kGoldenCount,
              static_cast<int>(reinterpret_cast<std::uintptr_t>(g_model) % 16));
  for (int i = 0; i < kNumClasses; ++i) std::printf("%s\n", kCategoryLabels[i]);
  return 0;
}
"""


def compile_and_run(sources: list[Path], folder: Path, *args: str) -> str:
    program = folder / "program"
    built = subprocess.run([CXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I",
                            str(sources[0].parent), *map(str, sources), "-o", str(program)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return subprocess.run([str(program), *args], check=True, capture_output=True).stdout.decode()


@pytest.fixture(scope="module")
def harness_run(built, tmp_path_factory):
    """The pack compiled with the harness and run: (bytes of g_model, golden tables, printed
    settings lines)."""
    out = tmp_path_factory.mktemp("harness")
    (out / "harness.cc").write_text(HARNESS)
    pack = built / mcu.FOLDER
    printed = compile_and_run([pack / "model_data.cc", pack / "golden.cc", out / "harness.cc"],
                              out, str(out / "model.bin"), str(out / "golden.bin"))
    return (out / "model.bin").read_bytes(), (out / "golden.bin").read_bytes(), printed


@needs_compiler
def test_compiled_model_data_is_the_tflite_byte_for_byte(built, harness_run):
    content, _, printed = harness_run
    assert content == (built / MODEL).read_bytes()
    width, height, channels, classes, arena, measured, golden, misaligned = map(
        int, printed.splitlines()[0].split())
    assert (width, height, channels, misaligned) == (32, 32, 3, 0)
    assert printed.splitlines()[1:] == (built / "labels.txt").read_text().splitlines()
    assert classes == len(printed.splitlines()) - 1 and golden == mcu.GOLDEN_IMAGES
    assert arena >= measured


@needs_compiler
def test_golden_outputs_are_what_tflite_micro_gives_and_the_arena_covers_it(built, harness_run):
    _, tables, printed = harness_run
    classes, arena_constant = (int(v) for v in printed.split()[3:5])
    inputs_size = mcu.GOLDEN_IMAGES * 32 * 32 * 3
    dtype = np.uint8  # the build's --io uint8 default
    inputs = np.frombuffer(tables[:inputs_size], dtype).reshape(-1, 32, 32, 3)
    outputs = np.frombuffer(tables[inputs_size:], dtype).reshape(-1, classes)
    rerun, arena, _ = micro.run_tensors(built / MODEL, inputs)
    np.testing.assert_array_equal(rerun, outputs)
    assert arena_constant >= arena


def test_op_resolver_registers_exactly_the_operators_litert_runs(built):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(built / MODEL),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = dict.fromkeys(op["op_name"] for op in interpreter._get_ops_details())
    header = (built / mcu.FOLDER / "op_resolver.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", header)
    assert registered == [mcu.resolver_method(op) for op in ops]
    assert f"kNumOps = {len(ops)};" in header
    assert "AddConv2D" in registered  # the method's name in TFLite Micro, not AddConv2d


@needs_compiler
def test_labels_are_c_strings_of_their_utf8_bytes(tmp_path):
    labels = ['chat "noir"', "猫", "back\\slash??=", "é1", "tab\there"]
    body = "\n".join(f'  std::fwrite({mcu.c_string(s)}, 1, {len(s.encode())}, stdout);'
                     for s in labels)
    (tmp_path / "labels.cc").write_text(f"#include <cstdio>\nint main() {{\n{body}\n}}\n")
    subprocess.run([CXX, "-std=c++17", "-Werror", "-Wall", "-Wtrigraphs",
                    str(tmp_path / "labels.cc"), "-o", str(tmp_path / "labels")],
                   check=True, capture_output=True)
    printed = subprocess.run([str(tmp_path / "labels")], check=True, capture_output=True).stdout
    assert printed == "".join(labels).encode()


def test_pack_is_recorded_and_an_edited_file_is_named_by_verify(built, copy_of):
    folder = copy_of(built)
    files = json.loads((folder / "export.json").read_text())["mcu"]["files"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(files) <= set(manifest["artifacts"])
    assert "mcu/model_settings.h" in files
    settings = folder / "mcu" / "model_settings.h"
    settings.write_text(settings.read_text().replace("kTensorArenaSize = ", "kTensorArenaSize = 1"))
    result = CliRunner().invoke(app, ["verify", "--artifacts", str(folder)])
    assert result.exit_code == 2
    assert "mcu/model_settings.h: bytes do not match the manifest" in result.output


def test_firmware_gates_and_npu_estimates_are_measured_and_reported(built, copy_of):
    """One verify: the arena gate fails in one line, the flash gate passes, and Vela's
    estimates for an Ethos-U55 are reported and its compiled model recorded."""
    folder = copy_of(built)
    result = CliRunner().invoke(app, ["verify", "--artifacts", str(folder), "--max-arena", "1000",
                                      "--max-flash", "1000000000", "--micro-images", "20",
                                      "--npu", "ethos-u55-128"])
    assert result.exit_code == 1
    assert re.search(r"squeezenet_int8.tflite needs [\d,]+ bytes of TFLite Micro arena \(RAM\), "
                     r"[\d,]+ over the 1,000 allowed", result.output)
    report = json.loads((folder / "report.json").read_text())
    arena, flash = (g for g in report["gates"] if g["metric"] in ("arena_bytes", "flash_bytes"))
    assert not arena["passed"] and flash["passed"]
    assert arena["value"] == report["mcu"]["arena_measured_bytes"]
    assert flash["value"] == (folder / MODEL).stat().st_size
    assert sum(report["mcu"]["flash_model_parts"].values()) == flash["value"]
    markdown = (folder / "report.md").read_text()
    assert "Firmware pack `mcu/`" in markdown and "Vela's estimates, not measurements" in markdown
    assert f"The model's {flash['value']:,} bytes: tensor data (weights, biases)" in markdown
    estimate = report["npu"]
    assert estimate["target"] == "ethos-u55-128" and estimate["clock_mhz"] == 500
    assert estimate["cycles"] > 0 and estimate["sram_bytes"] > 0
    assert estimate["npu_operators"] > 0 and estimate["cpu_operators"] == 0
    assert estimate["inference_ms_estimate"] == round(estimate["cycles"] / 500e3, 4)
    compiled = folder / "npu" / "squeezenet_int8_vela.tflite"
    assert tflite_file.operators(compiled.read_bytes()) == ["ethos-u"]  # the NPU's command stream
    recorded = json.loads((folder / "manifest.json").read_text())["artifacts"]
    assert "npu/squeezenet_int8_vela.tflite" in recorded


def test_a_firmware_gate_without_a_pack_is_one_line(tmp_path):
    skipped = {"skipped": "no int8 TFLite (quantize made float16)"}
    with pytest.raises(EdgefireError, match=r"--max-flash: .* has no firmware pack to gate "
                                            r"\(no int8 TFLite \(quantize made float16\)\)"):
        verify.firmware(tmp_path, skipped, VerifyConfig(max_flash=100_000))
    assert verify.firmware(tmp_path, skipped, VerifyConfig()) == (None, [])


def test_golden_images_are_of_several_classes_and_no_mcu_writes_no_pack(built, copy_of):
    labels = np.array([2, 2, 0, 1, 0, 3, 4, 1])
    assert mcu.golden_indices(labels).tolist() == [0, 2, 3, 5]
    assert mcu.golden_indices(np.array([1, 1, 1])).tolist() == [0]
    folder = copy_of(built)
    result = CliRunner().invoke(app, ["export", "--no-mcu", "--artifacts", str(folder)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "export.json").read_text())["mcu"]
    assert record == {"files": [], "skipped": "--no-mcu"}
    manifest = json.loads((folder / "manifest.json").read_text())["artifacts"]
    assert not [name for name in manifest if name.startswith("mcu/")]


def test_arena_constant_is_the_measurement_plus_the_stated_margin():
    assert mcu.arena_size(39_792) == 43_760  # 39,792 * 1.1 = 43,771.2 -> a multiple of 16 below
    assert mcu.arena_size(16) == 16 and mcu.arena_size(1) == 16  # never below the measurement
    for measured in range(1, 100_000, 997):
        assert measured <= mcu.arena_size(measured) <= max(measured * 1.1, measured + 15)


def test_operators_are_read_from_the_flatbuffer_in_order_of_first_use(built):
    ops = tflite_file.operators((built / MODEL).read_bytes())
    assert ops[0] == "QUANTIZE" and ops[-1] == "SOFTMAX" and len(set(ops)) == len(ops)


def test_operators_vela_cannot_place_are_reported_not_a_failure(built):
    _, estimate = npu.compile_model(built / "squeezenet_float32.tflite", "ethos-u55-32")
    assert estimate["npu_operators"] == 0 and estimate["cpu_operators"] > 0
    assert "SOFTMAX" in estimate["cpu_operator_types"]


def test_npu_bad_input_is_one_line(monkeypatch):
    with pytest.raises(EdgefireError, match=r"unknown --npu 'ethos-u55-99'.*ethos-u55-64"):
        VerifyConfig(npu="ethos-u55-99")
    float16 = QuantizeRecord(Path("quantize.json"), "m.tflite", "float16", "float16", 0.0, (), {})
    with pytest.raises(EdgefireError, match=r"--npu: Vela compiles int8 TFLite files; this "
                                            r"build's is float16"):
        verify.check_npu(float16)
    monkeypatch.setattr(npu.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EdgefireError, match=r"Vela compiler is not installed \(pip install "
                                            r"'edgefire\[npu\]'\)"):
        npu.check_available()


def test_float_operators_are_named_for_a_file_that_is_not_full_integer(built):
    assert tflite_file.operators((built / MODEL).read_bytes(), float_only=True) == []
    floats = tflite_file.operators((built / "squeezenet_float32.tflite").read_bytes(),
                                   float_only=True)
    assert {"CONV_2D", "SOFTMAX"} <= set(floats)
    line = report.firmware_lines({"model": MODEL, "arena_bytes": 16, "arena_measured_bytes": 16,
                                  "flash_model_bytes": 1, "runtime_flash_estimate_bytes": 1,
                                  "operators": ["CONV_2D"], "float_operators": ["CONV_2D"]})
    assert "not full-integer: CONV_2D run in float on the microcontroller" in line[0]
