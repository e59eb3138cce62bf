"""`make bench-front` on finished builds: a row per build from its verified report, latency
measured in the run, a build whose report changed since left out with why."""

from __future__ import annotations

import json

from edgefire.bench import front


def test_the_front_has_a_row_per_build_and_leaves_out_a_changed_report(built, copy_of,
                                                                      tmp_path, capsys):
    edited = copy_of(built)
    report = json.loads((edited / "report.json").read_text())
    report["artifacts"][1]["accuracy"] = 0.99
    (edited / "report.json").write_text(json.dumps(report))
    out = tmp_path / "front.json"
    assert front.main([str(built), str(edited), "--out", str(out)]) == 0
    assert "left out" in capsys.readouterr().out
    results = json.loads(out.read_text())
    row, = results["rows"]
    int8 = next(a for a in json.loads((built / "report.json").read_text())["artifacts"]
                if a["name"] == "squeezenet_int8.tflite")
    assert (row["int8_bytes"], row["top1"]) == (int8["bytes"], int8["accuracy"])
    assert row["arch"] == "squeezenet" and row["latency_ms"] > 0
    fits = [json.loads((built / f"{stage}.json").read_text()) for stage in ("train", "prune")]
    assert row["training_seconds"] == round(sum(r["fit_seconds"] for r in fits), 1) > 0
    assert row["epochs"] == f"{fits[0]['epochs']} epochs"  # every epoch timed
    assert "bytes do not match the manifest" in results["left_out"][0]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| squeezenet | 122,986 |" in out.with_suffix(".md").read_text()
