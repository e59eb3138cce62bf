"""Bootstrap intervals and McNemar's exact test on counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest


def test_mcnemar_and_bootstrap_on_known_counts():
    from edgefire.report import stats

    reference = np.array([True] * 10 + [True] * 90 + [False] * 100)
    other = np.array([False] * 10 + [True] * 90 + [False] * 100)  # 10 lost, none won
    assert stats.mcnemar_p(reference, other) == pytest.approx(2 * 0.5**10)
    assert stats.mcnemar_p(reference, reference) == 1.0
    rows = stats.resamples(len(reference))
    low, high = stats.accuracy_interval(other, rows)  # 90 of 200 right
    assert low < 0.45 < high and high - low == pytest.approx(2 * 1.96 * (0.45 * 0.55 / 200) ** 0.5,
                                                              rel=0.25)
    drop_low, drop_high = stats.drop_interval(reference, other, rows)
    assert 0 < drop_low < 5.0 < drop_high  # 5 points lost, never gained


def test_chance_is_a_guessers_interval_and_a_model_within_it_did_not_learn():
    from edgefire.report import stats
    from edgefire.stages.verify import learned

    assert abs(stats.chance_upper(10, 1000) - (0.1 + 1.96 * 0.0094868)) < 1e-6
    assert not learned(0.115, 10, 1000, 0)["above_chance"]
    assert learned(0.125, 10, 1000, 3)["above_chance"]
    assert not learned(0.55, 2, 200, 1)["above_chance"]  # two classes, few images: wide


def test_report_md_leads_with_the_warning_of_a_model_that_did_not_learn():
    from edgefire import report
    from edgefire.stages.verify import learned

    row = {"name": "m.h5", "path": "m.h5", "format": "keras", "precision": "float32",
           "bytes": 10, "gzip_bytes": 9, "sha256": "0", "under_target": True,
           "accuracy": 0.11, "accuracy_drop": 0.0, "agreement": 1.0, "latency_ms": 1.0,
           "throughput_ips": 1.0, "sparsity": None, "class_accuracy": [0.1] * 10,
           "confusion": [[10] * 10] * 10}
    result = {"dataset": {"source": "d", "name": "d", "test_images": 1000},
              "classes": [str(i) for i in range(10)], "reference": "m.h5",
              "target_bytes": 500000, "gates": [], "passed": True, "artifacts": [row],
              "learned": learned(0.11, 10, 1000, 0)}
    text = report.markdown(result)
    assert text.splitlines()[2] == ("**Warning: m.h5 scores 11.0% top-1, within chance for 10 "
                                    "classes (up to 11.9% on 1,000 images): the model did not "
                                    "learn (0 epochs trained)**")
    result["learned"] = learned(0.5, 10, 1000, 3)
    assert "Warning" not in report.markdown(result)


def test_class_names_the_font_cannot_draw_become_indices_on_the_chart():
    from edgefire.report import tick_labels

    assert tick_labels(["cat", "a $ sign"]) == (["cat", r"a \$ sign"], False)
    assert tick_labels(["猫", "dog"]) == (["0", "1"], True)
