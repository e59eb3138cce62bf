"""The least fraction of filters to remove for an int8 file to fit a byte budget.

Measuring a size means converting the model, which takes seconds; counting its parameters
takes milliseconds, and an int8 file's bytes follow its parameters almost on a line (int8
kernels, int32 biases, a few per-channel scales and the flatbuffer around them). So each
guess is where the line through the nearest measurements on either side of the budget
meets it, and the next measurement lies a tolerance beyond the guess, on the other side:
when the line is right, two conversions close the bracket. A plain bisection to the same
tolerance took eight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edgefire.errors import EdgefireError

TOLERANCE = 0.004  # of the fraction removed: what eight bisection steps over 0..0.95 give
MAX_MEASUREMENTS = 12


@dataclass
class Search:
    """`size(ratio)` measures the file's bytes with `ratio` removed (slow); `parameters(ratio)`
    counts the model's parameters (fast, decreasing with the ratio)."""

    size: Callable[[float], int]
    parameters: Callable[[float], int]
    target: int
    measured: list[dict] = field(default_factory=list)  # in the order they were made

    def measure(self, ratio: float) -> int:
        size = self.size(ratio)
        self.measured.append({"channel_sparsity": round(ratio, 4), "int8_bytes": size})
        return size

    def least_ratio(self, highest: float) -> float:
        """The least ratio within TOLERANCE of the boundary whose file was measured within the
        target (0 when the whole model fits); one line when even `highest` does not fit."""
        sizes = {highest: self.measure(highest)}
        if sizes[highest] > self.target:
            raise EdgefireError(f"--target-bytes {self.target}: even with {highest:.0%} "
                                "removed the int8 TFLite is larger")
        sizes[0.0] = self.measure(0.0)
        low, high = 0.0, highest  # low: over the target (or nothing removed), high: within
        if sizes[low] <= self.target:
            return 0.0
        while high - low > TOLERANCE and len(self.measured) < MAX_MEASUREMENTS:
            guess = min(max(self._crossing(low, high, sizes), low + TOLERANCE / 2),
                        high - TOLERANCE / 2)
            sizes[guess] = self.measure(guess)
            fits = sizes[guess] <= self.target
            low, high = (low, guess) if fits else (guess, high)
            beyond = guess - 0.9 * TOLERANCE if fits else guess + 0.9 * TOLERANCE
            if low < beyond < high and len(self.measured) < MAX_MEASUREMENTS:
                sizes[beyond] = self.measure(beyond)
                low, high = (low, beyond) if sizes[beyond] <= self.target else (beyond, high)
        return high

    def _crossing(self, low: float, high: float, sizes: dict[float, int]) -> float:
        """Where the line through the two measurements meets the target, as a ratio (found
        by bisection on the parameter count)."""
        counts = self.parameters(low), self.parameters(high)
        if counts[0] == counts[1] or sizes[low] == sizes[high]:
            return (low + high) / 2
        slope = (sizes[high] - sizes[low]) / (counts[1] - counts[0])
        wanted = counts[0] + (self.target - sizes[low]) / slope  # parameters on the line
        a, b = low, high
        for _ in range(12):  # 0.95 / 2^12: a tenth of the tolerance
            middle = (a + b) / 2
            a, b = (middle, b) if self.parameters(middle) > wanted else (a, middle)
        return b
