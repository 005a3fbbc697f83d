"""Where a scalar series over training steps changes: the largest jump, a change point, and whether
the checkpoints are too sparse around it. Pure Python (no numpy, no torch): the API runs it when a
sweep's parent job is read (service/sweeps.py), and series are short (at most a few hundred points).

The detector (docs/checkpoints.md, "Sweeps"):

- **largest jump**: the consecutive pair of checkpoints `(s[i-1], s[i])` with the largest `|y[i] - y[i-1]|`.
- **change point**: the best single split of a step function. For each split `k` (1 <= k < n) the
  series is fitted by two constants, the mean of `y[:k]` and the mean of `y[k:]`; the change point is
  the `k` that minimises the residual sum of squares, i.e. maximises the between-segment variance
  reduction `SSE(all) - SSE(left) - SSE(right)`, which equals `k (n-k) / n * (mean_left - mean_right)^2`.
  It is the first step of the after segment; `variance_explained` = reduction / SSE(all) in [0, 1]
  says how much of the series a single step explains (1: a clean step; a straight line gives 0.75 at
  its middle). A constant series, or fewer than 3 points, has no change point.
  This is binary segmentation's first split (the least-squares single change-point estimator,
  e.g. Bai 1994), with no penalty: it always names the best split and reports how good it is,
  rather than a yes/no test.
- **sparse around it**: the change happens somewhere in the interval `(s[k-1], s[k])`. Checkpoints
  usually sit on a log-spaced schedule, so the interval is measured in `log(1 + step)`. The result
  warns when that interval spans more than `SPARSE_LOG_FRACTION` of the sweep's log-step range, or
  when that single interval carries at least `CONCENTRATED_SHARE` of the level change
  `|mean_right - mean_left|` (the transition happened between two checkpoints, so how abrupt it is
  cannot be told from these checkpoints), and suggests steps inside the interval to add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

SPARSE_LOG_FRACTION = 0.15  # the change's interval spans more than this share of the log-step range
CONCENTRATED_SHARE = 0.6  # one interval carries at least this share of the level change
SUGGESTED = 3  # steps suggested inside a sparse interval


@dataclass(frozen=True)
class Jump:
    from_step: int
    to_step: int
    delta: float  # y[to] - y[from]


@dataclass(frozen=True)
class ChangePoint:
    step: int  # the first step of the after segment
    previous_step: int  # the last step before it: the change happened in (previous_step, step]
    before: float  # mean of the series before `step`
    after: float  # mean from `step` on
    variance_explained: float  # between-segment reduction / total sum of squares, in [0, 1]
    interval_log_fraction: float  # log(1+step) - log(1+previous_step) over the sweep's log-step range
    interval_share: float  # |y[step] - y[previous_step]| / |after - before|
    sparse: bool  # the interval is too wide or carries the change alone: add checkpoints inside it
    suggested_steps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Analysis:
    largest_jump: Jump | None
    change_point: ChangePoint | None


def largest_jump(steps: list[int], values: list[float]) -> Jump | None:
    """The consecutive pair with the largest |Δ| (the first on ties); None under 2 points."""
    if len(values) < 2:
        return None
    i = max(range(1, len(values)), key=lambda j: abs(values[j] - values[j - 1]))
    return Jump(steps[i - 1], steps[i], values[i] - values[i - 1])


def best_split(values: list[float]) -> tuple[int, float] | None:
    """The split `k` maximising the between-segment reduction of the sum of squares, with the share
    of the total it explains; None when under 3 points or the series is constant."""
    n = len(values)
    if n < 3:
        return None
    mean = sum(values) / n
    total = sum((v - mean) ** 2 for v in values)
    if total <= 1e-12 * max(1.0, mean * mean) * n:
        return None
    best_k, best = 0, -1.0
    left = 0.0
    whole = sum(values)
    for k in range(1, n):
        left += values[k - 1]
        mean_left, mean_right = left / k, (whole - left) / (n - k)
        reduction = k * (n - k) / n * (mean_left - mean_right) ** 2
        if reduction > best + 1e-15 * total:  # the first on ties
            best_k, best = k, reduction
    return best_k, min(1.0, best / total)


def _log(step: int) -> float:
    return math.log1p(max(step, 0))


def suggest(previous_step: int, step: int, count: int = SUGGESTED) -> list[int]:
    """Up to `count` integer steps strictly inside (previous_step, step), evenly spaced in log(1+step)."""
    lo, hi = _log(previous_step), _log(step)
    out: list[int] = []
    for j in range(1, count + 1):
        s = round(math.expm1(lo + (hi - lo) * j / (count + 1)))
        if previous_step < s < step and s not in out:
            out.append(s)
    return out


def change_point(steps: list[int], values: list[float]) -> ChangePoint | None:
    split = best_split(values)
    if split is None:
        return None
    k, explained = split
    before = sum(values[:k]) / k
    after = sum(values[k:]) / (len(values) - k)
    span = _log(steps[-1]) - _log(steps[0])
    fraction = (_log(steps[k]) - _log(steps[k - 1])) / span if span > 0 else 1.0
    level = abs(after - before)
    share = abs(values[k] - values[k - 1]) / level if level > 0 else 0.0
    sparse = fraction > SPARSE_LOG_FRACTION or share >= CONCENTRATED_SHARE
    return ChangePoint(step=steps[k], previous_step=steps[k - 1], before=before, after=after,
                       variance_explained=explained, interval_log_fraction=fraction, interval_share=share,
                       sparse=sparse, suggested_steps=suggest(steps[k - 1], steps[k]) if sparse else [])


def analyse(steps: list[int], values: list[float]) -> Analysis:
    """Largest jump and change point of `values` over increasing `steps` (same length, finite)."""
    if len(steps) != len(values):
        raise ValueError("steps and values differ in length")
    if any(b <= a for a, b in pairwise(steps)):
        raise ValueError("steps must increase")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("values must be finite")
    return Analysis(largest_jump(steps, values), change_point(steps, values))
