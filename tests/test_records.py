"""Hand-edited stage records (a key dropped, a value of another type, a number changed): every
command that reads one answers with one line and exit 2, never a traceback or a wrong run."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgefire.cli import app

RECORDS = ["train.json", "quantize.json", "export.json", "prune.json", "manifest.json"]
COMMANDS = [["verify", "--micro-images", "20"], ["export"], ["quantize", "--no-fallback"],
            ["predict", "{image}"], ["compare", "{folder}"]]
OTHER_TYPES = [None, 7, -1.5, "text", [], {}, True]


def paths(content, prefix=()):
    """Every key path of a JSON object, nested tables included."""
    for key, value in content.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from paths(value, (*prefix, key))


def mutate(content: dict, path: tuple, how: str, other):
    target = content
    for key in path[:-1]:
        target = target[key]
    if how == "drop":
        del target[path[-1]]
    elif how == "retype":
        target[path[-1]] = other
    elif isinstance(target[path[-1]], int | float) and not isinstance(target[path[-1]], bool):
        target[path[-1]] = target[path[-1]] * 3 + 1


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=st.sampled_from(RECORDS), command=st.sampled_from(COMMANDS),
       how=st.sampled_from(["drop", "retype", "edit"]), other=st.sampled_from(OTHER_TYPES),
       pick=st.integers(0, 10_000))
def test_an_edited_record_is_one_line_from_every_command(built, image_folder, tmp_path_factory,
                                                         record, command, how, other, pick):
    folder = shutil.copytree(built, tmp_path_factory.mktemp("edited") / "artifacts")
    content = json.loads((folder / record).read_text())
    keys = list(paths(content))
    mutate(content, keys[pick % len(keys)], how, other)
    (folder / record).write_text(json.dumps(content))
    image = next((image_folder / "test").rglob("*.png"))
    args = [a.format(image=image, folder=folder) for a in command]
    if command[0] != "compare":
        args += ["--artifacts", str(folder)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), (record, keys[pick % len(keys)], how, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("edgefire:")]
        assert len(errors) == 1, result.output
