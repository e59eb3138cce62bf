"""How sure a measured accuracy is: seeded bootstrap intervals and McNemar's exact test.

The test images are resampled with replacement, the same resamples for every artifact, so
the interval of a drop is paired (both models judged on the same images). McNemar's exact
test asks whether the images only one of two models gets right split evenly between them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 1000
SEED = 0


def resamples(images: int, count: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Bootstrap resamples of image indices, one row per resample."""
    return np.random.default_rng(seed).integers(0, images, size=(count, images), dtype=np.int32)


def interval(values: np.ndarray) -> list[float]:
    """The central 95% of bootstrap values."""
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 6), round(float(high), 6)]


def accuracy_interval(correct: np.ndarray, rows: np.ndarray) -> list[float]:
    """95% interval of top-1 accuracy (0-1)."""
    return interval(correct[rows].mean(axis=1))


def drop_interval(reference_correct: np.ndarray, correct: np.ndarray,
                  rows: np.ndarray) -> list[float]:
    """95% interval of the drop from the reference, in points, on paired resamples."""
    difference = reference_correct.astype(np.int8) - correct.astype(np.int8)
    return interval(difference[rows].mean(axis=1) * 100)


def mcnemar_p(reference_correct: np.ndarray, correct: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of the images the two models disagree on."""
    only_reference = int(np.sum(reference_correct & ~correct))
    only_this = int(np.sum(~reference_correct & correct))
    if only_reference + only_this == 0:
        return 1.0
    return float(binomtest(only_this, only_reference + only_this, 0.5).pvalue)


def chance_upper(classes: int, images: int) -> float:
    """The top of the 95% interval of a guesser's top-1 (1/classes) on `images` images: a
    model at or below it has not shown that it learned anything."""
    p = 1 / classes
    return p + 1.96 * (p * (1 - p) / images) ** 0.5
