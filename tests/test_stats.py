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
