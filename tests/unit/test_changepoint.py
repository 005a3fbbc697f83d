"""The sweep's change-point detector (common/changepoint.py) on synthetic series with a known answer,
checked against a brute-force least-squares two-segment fit."""

from __future__ import annotations

import math
import random

import pytest

from common.changepoint import (
    CONCENTRATED_SHARE,
    SPARSE_LOG_FRACTION,
    analyse,
    best_split,
    largest_jump,
    suggest,
)

LOG_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def _sse(values: list[float]) -> float:
    m = sum(values) / len(values)
    return sum((v - m) ** 2 for v in values)


def _brute_split(values: list[float]) -> int:
    """The k minimising SSE(left) + SSE(right), by direct evaluation of every split."""
    return min(range(1, len(values)), key=lambda k: (_sse(values[:k]) + _sse(values[k:]), k))


def test_clean_step_is_found_exactly():
    values = [1.0] * 6 + [3.0] * 6
    a = analyse(LOG_STEPS, values)
    assert a.change_point is not None
    assert a.change_point.step == LOG_STEPS[6] and a.change_point.previous_step == LOG_STEPS[5]
    assert a.change_point.before == pytest.approx(1.0) and a.change_point.after == pytest.approx(3.0)
    assert a.change_point.variance_explained == pytest.approx(1.0)
    assert a.largest_jump is not None and (a.largest_jump.from_step, a.largest_jump.to_step) == (16, 32)
    assert a.largest_jump.delta == pytest.approx(2.0)
    # the whole change sits in one interval: flagged, with steps to add strictly inside it
    assert a.change_point.interval_share == pytest.approx(1.0) and a.change_point.sparse
    assert a.change_point.suggested_steps and all(16 < s < 32 for s in a.change_point.suggested_steps)


@pytest.mark.parametrize("seed", range(20))
def test_split_equals_brute_force_least_squares(seed):
    rng = random.Random(seed)
    n = rng.randint(3, 40)
    true_k = rng.randint(1, n - 1)
    values = [rng.gauss(0, 1) + (rng.uniform(2, 6) if i >= true_k else 0.0) for i in range(n)]
    k, explained = best_split(values)
    assert k == _brute_split(values)
    reduction = _sse(values) - _sse(values[:k]) - _sse(values[k:])
    assert explained == pytest.approx(reduction / _sse(values))


def test_noisy_step_located_and_sigmoid_midpoint():
    rng = random.Random(7)
    values = [5.0 + rng.gauss(0, 0.05) for _ in range(7)] + [2.0 + rng.gauss(0, 0.05) for _ in range(5)]
    a = analyse(LOG_STEPS, values)  # a loss-like drop
    assert a.change_point.step == LOG_STEPS[7] and a.change_point.after < a.change_point.before
    assert a.largest_jump.to_step == LOG_STEPS[7] and a.largest_jump.delta < -2.5
    # a smooth sigmoid in log-step: the split sits at its midpoint, no single interval carries it
    steps = list(range(0, 2001, 50))
    sig = [1 / (1 + math.exp(-(math.log1p(s) - math.log1p(400)) * 3)) for s in steps]
    cp = analyse(steps, sig).change_point
    assert abs(math.log1p(cp.step) - math.log1p(400)) < 0.3
    assert cp.interval_share < CONCENTRATED_SHARE and cp.interval_log_fraction < SPARSE_LOG_FRACTION
    assert not cp.sparse and cp.suggested_steps == []


def test_linear_series_explains_three_quarters():
    values = [float(i) for i in range(101)]
    cp = analyse(list(range(101)), values).change_point
    assert cp.step in (50, 51)
    assert cp.variance_explained == pytest.approx(0.75, abs=1e-3)


def test_wide_log_interval_is_sparse_even_when_gradual():
    # four checkpoints: the change happens between 10 and 10,000, a third of the log range and more
    steps = [0, 10, 10_000, 20_000]
    cp = analyse(steps, [0.0, 0.1, 0.9, 1.0]).change_point
    assert (cp.previous_step, cp.step) == (10, 10_000)
    assert cp.interval_log_fraction > SPARSE_LOG_FRACTION and cp.sparse
    assert all(10 < s < 10_000 for s in cp.suggested_steps) and cp.suggested_steps == sorted(cp.suggested_steps)


def test_degenerate_series():
    assert analyse([5], [1.0]).largest_jump is None
    a = analyse([1, 2], [0.0, 1.0])
    assert a.largest_jump.delta == 1.0 and a.change_point is None  # two points: no split to judge
    assert analyse([1, 2, 3, 4], [2.0] * 4).change_point is None  # constant
    with pytest.raises(ValueError):
        analyse([2, 1], [0.0, 1.0])
    with pytest.raises(ValueError):
        analyse([1, 2], [0.0, float("nan")])


def test_largest_jump_ties_and_suggest_bounds():
    assert largest_jump([0, 1, 2], [0.0, 1.0, 2.0]).from_step == 0  # first on ties
    assert suggest(3, 4) == []  # no integer strictly inside
    assert suggest(0, 1000) == sorted(suggest(0, 1000)) and len(suggest(0, 1000)) == 3
