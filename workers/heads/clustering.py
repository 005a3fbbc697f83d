"""Clusters of redundant heads from a distance matrix (Bian et al. 2021 §4 read the cluster structure
of the 144 × 144 matrix of BERT-base), the per-head redundancy score, the agreement of two
structures, and the pruning search.

- clusters: average-linkage (UPGMA) hierarchical clustering, cut where the mean distance between two
  merged groups would exceed `threshold` (scipy's `linkage(method="average")` + `fcluster(criterion=
  "distance")`);
- redundancy of head h: 1 − min_{g ≠ h} d(h, g), 1 when another head computes the same thing;
- agreement: Pearson r of the off-diagonal entries and the adjusted Rand index of the clusterings;
- `largest_prefix`: binary search for the longest prefix of an order that stays acceptable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score


def cluster_labels(d: torch.Tensor, threshold: float) -> list[int]:
    """(N, N) symmetric distances -> flat cluster label per head (0-based, arbitrary order)."""
    n = d.shape[0]
    if n < 2:
        return [0] * n
    m = d.double().clamp_min(0).numpy().copy()
    np.fill_diagonal(m, 0.0)
    z = linkage(squareform((m + m.T) / 2, checks=False), method="average")
    return [int(c) - 1 for c in fcluster(z, t=threshold, criterion="distance")]


def clusters_of(labels: list[int]) -> tuple[list[list[int]], list[int]]:
    """Groups of two or more members (largest first, then by first member) and each member's index
    into them (−1: alone)."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        groups.setdefault(c, []).append(i)
    kept = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    index = [-1] * len(labels)
    for j, g in enumerate(kept):
        for i in g:
            index[i] = j
    return kept, index


def nearest(d: torch.Tensor) -> tuple[list[int], list[float]]:
    """Each head's nearest other head and the distance to it."""
    m = d.double().clone()
    m.fill_diagonal_(float("inf"))
    dist, idx = m.min(1)
    return idx.tolist(), dist.tolist()


def agreement(d1: torch.Tensor, d2: torch.Tensor, labels1: list[int], labels2: list[int]) -> tuple[float, float]:
    """(Pearson r of the off-diagonal entries, adjusted Rand index of the clusterings)."""
    iu = torch.triu_indices(d1.shape[0], d1.shape[0], 1)
    x, y = d1[iu[0], iu[1]].double(), d2[iu[0], iu[1]].double()
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    r = float((x * y).sum()) / denom if denom > 0 else 0.0
    return r, float(adjusted_rand_score(labels1, labels2))


def largest_prefix(n: int, acceptable: Callable[[int], bool]) -> tuple[int, int | None, int]:
    """The largest k in [0, n] with acceptable(k), by binary search (acceptable(0) is assumed; a
    non-monotone `acceptable` gives a k whose own check passed and whose k + 1 failed, not
    necessarily the largest). Returns (k, the smallest failing k found or None, evaluations)."""
    calls = 0

    def check(k: int) -> bool:
        nonlocal calls
        calls += 1
        return acceptable(k)

    if n == 0:
        return 0, None, 0
    if check(n):
        return n, None, calls
    lo, hi = 0, n  # acceptable(lo), not acceptable(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi, calls
