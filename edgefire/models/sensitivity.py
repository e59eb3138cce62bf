"""Filters spread over the layers by measured sensitivity, not the same fraction everywhere.

Each prunable unit is thinned alone to each of `LEVELS` and the model's validation accuracy
measured (no fine-tuning): a unit whose loss of accuracy per parameter removed is small gives
more. The units are then thinned together, level by level, always where the next step costs
the least accuracy per parameter, until the fraction of parameters asked for is removed (the
classic sensitivity analysis of filter pruning, Li et al. 2017, with a parameter budget).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgefire.models import channels
from edgefire.tfenv import keras

LEVELS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)  # fractions of a unit's filters removed
IMAGES = 2000  # validation images each measurement uses: enough to rank, fast to run


@dataclass(frozen=True)
class Step:
    level: float  # fraction of the unit's filters removed
    accuracy: float  # of the model with only this unit thinned, no fine-tuning
    removed: int  # parameters removed


@dataclass(frozen=True)
class Sensitivity:
    steps: dict[frozenset, list[Step]]  # per unit, from level 0
    parameters: int  # of the whole model

    def path(self) -> list[frozenset]:
        """The greedy order: each entry thins that unit one level further, the step that
        costs the least accuracy per parameter it removes first."""
        at, order = dict.fromkeys(self.steps, 0), []
        while cost := {unit: self._cost(unit, at[unit]) for unit in at
                       if at[unit] + 1 < len(self.steps[unit])}:
            unit = min(cost, key=cost.get)
            at[unit] += 1
            order.append(unit)
        return order

    def ratios(self, fraction: float, removed: Callable[[dict], int]) -> dict[frozenset, float]:
        """A level per unit: the shortest prefix of `path` whose plan removes at least
        `fraction` of the parameters (or the whole path), its last step taken only as far as
        the goal needs, `removed(ratios)` counting them on the model (units thinned together
        share kernels: their sums would overcount)."""
        order, goal = self.path(), fraction * self.parameters
        counted: dict[int, int] = {}  # parameters removed by each prefix measured

        def levels(steps: int) -> dict[frozenset, float]:
            taken = Counter(order[:steps])
            return {unit: self.steps[unit][taken[unit]].level for unit in self.steps}

        def removed_by(steps: int) -> int:
            if steps not in counted:
                counted[steps] = removed(levels(steps))
            return counted[steps]

        low, high = 0, len(order)  # removed() grows along the path: bisect it
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if removed_by(middle) >= goal else (middle + 1, high)
        if low == 0 or removed_by(low) <= goal:
            return levels(low)
        # the last step (an eighth of a layer's filters) taken only as far as the goal needs:
        # a whole one would leave bytes of a budget unused
        before, after, unit = levels(low - 1), levels(low), order[low - 1]
        share = (goal - removed_by(low - 1)) / (removed_by(low) - removed_by(low - 1))
        return {**before, unit: before[unit] + share * (after[unit] - before[unit])}

    def _cost(self, unit: frozenset, level: int) -> float:
        here, there = self.steps[unit][level], self.steps[unit][level + 1]
        return (here.accuracy - there.accuracy) / max(there.removed - here.removed, 1)

    def to_json(self) -> dict:
        return {"images": IMAGES, "units": [
            {"layers": sorted(unit), "levels": [s.level for s in steps],
             "accuracy": [round(s.accuracy, 4) for s in steps],
             "parameters_removed": [s.removed for s in steps]}
            for unit, steps in self.steps.items()]}


def measure(model, x: np.ndarray, y: np.ndarray, accuracy) -> Sensitivity:
    """Each unit of `model` thinned alone to each level; `accuracy(model, x, y)` scores it.

    A copy of the model is muted (`channels.mute`) rather than each thinner model built: the
    same function, and a rebuild cost more than scoring 2,000 images (0.7 s a model here).
    """
    x, y = x[:IMAGES], y[:IMAGES]
    base, total = accuracy(model, x, y), int(model.count_params())
    weights, muted = model.get_weights(), keras().models.clone_model(model)
    steps = {}
    found = channels.units(model)
    for unit in found:
        rows = [Step(0.0, base, 0)]
        for level in LEVELS:
            chosen = channels.plan(model, 0.0, {unit.members: level}, found)
            muted.set_weights(weights)
            channels.mute(muted, chosen)
            rows.append(Step(level, accuracy(muted, x, y),
                             total - channels.parameters(model, chosen)))
        steps[unit.members] = rows
    return Sensitivity(steps, total)
