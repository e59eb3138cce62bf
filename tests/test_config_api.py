"""Config files (`--config FILE.toml`, `[tool.edgefire]`) and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefire.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_config_file_overrides_defaults_and_flags_override_it(built, image_folder,
                                                               tmp_path, monkeypatch):
    """Said by a dry run on the shared build (conftest's BUILD flags): train is up to date
    only if the file's settings beat the defaults and the flag beats the file."""
    monkeypatch.chdir(tmp_path)
    Path("pyproject.toml").write_text('[tool.edgefire.prune]\nsparsity = 0.3\nepochs = 2\n')
    config = tmp_path / "edgefire.toml"
    config.write_text(f'[train]\ndata = "{image_folder}"\nepochs = 1\nbatch_size = 32\n'
                      'learning_rate = 0.05\nseed = 1\n'
                      '[prune]\nepochs = 1\nkeep_dense = ["conv10"]\n[verify]\nmax_drop = 50.0\n')
    result = invoke("build", "--quantize", "int8", "--config", str(config), "--epochs", "3",
                    "--artifacts", str(built), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [  # prune: pyproject's sparsity, the file's epochs
        "= train: up to date", '> prune: would run (changed: keep_dense ["conv", "conv10"] '
                               '-> ["conv10"], sparsity 0.4 -> 0.3)']


@pytest.mark.parametrize("text, needle", [
    ("[train]\nweight_dekay = 0.1\n", "unknown key 'weight_dekay' in [train] (keys: data,"),
    ("[train]\nepochs = \"ten\"\n", "[train] epochs must be int (got str 'ten')"),
    ("[train]\nepochs = 2.5\n", "[train] epochs must be int (got float 2.5)"),
    ("[quantize]\nqat = 1\n", "[quantize] qat must be bool (got int 1)"),
    ("[prune]\nkeep_dense = [\"conv1\", 3]\n",
     "[prune] keep_dense must be tuple[str, ...] (got list ['conv1', 3])"),
    ("[train]\nmean = [127.5, \"x\", 1]\n", "[train] mean must be tuple[float, ...]"),
    ("[training]\nepochs = 2\n", "unknown section [training] (sections: train, prune,"),
    ("[train]\nepochs = 0\n", "--epochs must be >= 1 and <= 10000 (got 0)"),
    ("[train]\nmixup = -0.2\n", "mixup must be >= 0 (got -0.2)"),
    ("[train]\ncutout = 33\n", "cutout must be >= 0 and <= 32 (got 33)"),
    ("[train]\ncutout = 4.5\n", "[train] cutout must be int (got float 4.5)"),
    ("[train\nepochs = 2\n", "not a readable TOML config"),
])
def test_a_bad_config_file_is_one_line(text, needle, tmp_path):
    config = tmp_path / "edgefire.toml"
    config.write_text(text)
    result = invoke("build", "--config", str(config), "--artifacts", str(tmp_path / "a"))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("edgefire: error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not (tmp_path / "a" / "trained.h5").exists()


def test_a_missing_config_file_is_one_line(tmp_path):
    result = invoke("build", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2 and "nope.toml: config file not found" in result.output


@pytest.mark.slow
def test_the_python_api_builds_and_verifies(built, image_folder, copy_of):
    """`import edgefire; edgefire.build(...)` in a fresh interpreter, as the README shows: the
    settings of the CLI's build flags (conftest's BUILD) find that build up to date, and a
    verify with another gate reruns."""
    folder = copy_of(built)
    train = {"data": str(image_folder), "epochs": 3, "batch_size": 32, "seed": 1,
             "learning_rate": 0.05}
    code = (
        "import json, sys, edgefire\n"
        f"report = edgefire.build({str(folder)!r}, train={train!r}, prune={{'epochs': 1}}, "
        "quantize={'mode': 'int8'})\n"
        f"again = edgefire.verify({str(folder)!r}, max_drop=50.0)\n"
        "print(json.dumps([report['passed'], again['passed'], report['input']['size']]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": up to date") == 5, done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True, [32, 32]]
    assert json.loads((folder / "report.json").read_text())["gates"] != json.loads(
        (built / "report.json").read_text())["gates"]  # verify's new max_drop


def test_the_api_raises_the_same_errors_as_the_cli():
    import edgefire
    from edgefire.errors import EdgefireError

    with pytest.raises(EdgefireError, match=r"--sparsity must be >= 0 and < 1 \(got 1.5\)"):
        edgefire.build("unused", prune={"sparsity": 1.5})
    with pytest.raises(EdgefireError, match="unknown key 'max_dorp'"):
        edgefire.verify("unused", max_dorp=1.0)


@pytest.mark.parametrize("text, needle", [
    ("[tool]\nedgefire = 1\n", "[tool.edgefire] must be a table of sections (got int)"),
    ("tool = 1\n", "unknown"),
    ("[tool.edgefire.train]\nepochs = 2.5\n", "[train] epochs must be int"),
])
def test_a_bad_tool_edgefire_table_is_one_line(text, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pyproject.toml").write_text(text)
    result = invoke("build", "--data", str(tmp_path / "nowhere"))
    if needle == "unknown":  # no [tool] table at all: nothing of edgefire's to read
        assert "data source does not exist" in result.output
        return
    assert result.exit_code == 2 and needle in result.output, result.output
    assert result.output.count("\n") == 1


def test_verify_max_drop_is_also_the_fallbacks_budget_in_every_front_end():
    """One budget: the API and config files (not only the CLI) hand it to quantize."""
    from edgefire import api

    plan = api.plan({"verify": {"max_drop": 0.5}})
    assert plan.quantize.max_drop == plan.verify.max_drop == 0.5
    both = api.plan({"verify": {"max_drop": 0.5}, "quantize": {"max_drop": 2.0}})
    assert (both.quantize.max_drop, both.verify.max_drop) == (2.0, 0.5)
    budget = api.plan({"prune": {"method": "channels", "target_bytes": 90_000}})
    assert budget.verify.max_bytes is None  # verify reads prune's budget from its record
    given = api.plan({"prune": {"method": "channels", "target_bytes": 90_000},
                      "verify": {"max_bytes": 120_000}})
    assert given.verify.max_bytes == 120_000


@pytest.mark.parametrize("command, setting, needle", [
    ("train", "epochs = 0", "--epochs must be >= 1"),
    ("prune", "sparsity = 1.5", "--sparsity must be >= 0 and < 1"),
    ("quantize", 'io = "int16"', "--io"),
    ("export", "opset = 7", "--opset must be >= 13"),
    ("verify", "max_drop = -1.0", "--max-drop must be >= 0"),
])
def test_every_stage_command_reads_the_projects_tool_edgefire(command, setting, needle,
                                                              tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pyproject.toml").write_text(f"[tool.edgefire.{command}]\n{setting}\n")
    result = invoke(command, "--artifacts", str(tmp_path / "a"))
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert needle in result.output, result.output


def test_each_option_is_declared_once_on_its_config_field():
    """Stage commands and build take their options from the config fields: same flag or
    build's own, the field's help, the field's default."""
    import dataclasses

    from edgefire import api
    from edgefire.cli_options import options_of

    for section, cls in api.SECTIONS.items():
        fields = {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
        for on_build in (False, True):
            options = {o.field: o for o in options_of(section, on_build)}
            expected = {n for n, f in fields.items()
                        if not on_build or f.metadata["build"] is not False}
            assert set(options) == expected
            for name, option in options.items():
                info = option.parameter.annotation.__metadata__[0]
                assert info.help == fields[name].metadata["help"]
    build_help = invoke("build", "--help").output
    for flag in ("--prune-epochs", "--prune-learning-rate", "--distill", "--qat-epochs",
                 "--max-drop", "--opset", "--model", "--keep-dense"):
        assert flag in build_help
    assert "--optimizer" in invoke("prune", "--help").output


def test_a_given_option_overrides_the_config_file_on_a_stage_command(tmp_path):
    config = tmp_path / "edgefire.toml"
    config.write_text("[export]\nopset = 7\n")
    refused = invoke("export", "--config", str(config), "--artifacts", str(tmp_path / "a"))
    assert refused.exit_code == 2 and "--opset must be >= 13" in refused.output
    given = invoke("export", "--config", str(config), "--opset", "13", "--artifacts",
                   str(tmp_path / "a"))
    assert given.exit_code == 2 and "opset" not in given.output, given.output
