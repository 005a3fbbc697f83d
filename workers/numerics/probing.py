"""Fitting and scoring linear probes: seeded, label-stratified, group-aware splits, every (split,
site) probe solved in one batched logistic regression (`workers/numerics/logistic.py`), and a probe's
direction in activation space. Used by `probe` (accuracy per site) and `steering_fit` (the ITI
head selection and the probe direction); `workers/methods/probe.py` says where this differs from
the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from schemas.kinds.probe import SplitParams
from workers.errors import BadInput
from workers.numerics import logistic
from workers.progress import Progress

Split = tuple[np.ndarray, np.ndarray]  # (train indices, validation indices)


def class_index(labels: Sequence[object]) -> tuple[list, np.ndarray]:
    """Sorted distinct labels and each example's class index, (N,)."""
    classes = sorted(set(labels), key=lambda c: (type(c).__name__, repr(c)))
    where = {c: i for i, c in enumerate(classes)}
    return classes, np.array([where[c] for c in labels])


def make_splits(y: np.ndarray, groups: Sequence[str | None] | None, params: SplitParams) -> tuple[list[Split], str]:
    """Seeded, label-stratified, group-aware k-fold (or one holdout split) and its description."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, StratifiedKFold, StratifiedShuffleSplit

    if (err := params.split_error(y.tolist(), groups)) is not None:  # the same check as at submit
        raise BadInput(err.msg, [err])
    X = np.zeros((len(y), 1))
    grouped = groups is not None and any(g is not None for g in groups)
    g = np.array([gi if gi is not None else f"\0{i}" for i, gi in enumerate(groups)]) if grouped else None
    if params.holdout is not None:
        splitter = (GroupShuffleSplit(1, test_size=params.holdout, random_state=params.seed) if grouped
                    else StratifiedShuffleSplit(1, test_size=params.holdout, random_state=params.seed))
        splits = list(splitter.split(X, y, g))
        described = f"holdout ({params.holdout})"
    else:
        splitter = (StratifiedGroupKFold(params.folds, shuffle=True, random_state=params.seed) if grouped
                    else StratifiedKFold(params.folds, shuffle=True, random_state=params.seed))
        splits = list(splitter.split(X, y, g))
        described = f"k-fold (k={params.folds})"
    for train, _ in splits:
        if len(np.unique(y[train])) < 2:
            raise BadInput("a training split has only one label; give more examples of each label or fewer folds")
    return splits, described


def validation_accuracy(X: np.ndarray, y: np.ndarray, splits: list[Split], C: float, seed: int,
                        progress: Progress, progress_span: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over splits of each site's validation accuracy: X (N, sites, D) -> (sites,), (sites,).

    One batched solve fits every (split, site) probe (`workers/numerics/logistic.py`); the optimum is
    unique, so `seed` changes nothing here (it seeds the splits)."""
    lo, hi = progress_span
    x = torch.from_numpy(np.ascontiguousarray(X))
    train = torch.zeros(len(splits), len(y), dtype=torch.bool)  # (F, N)
    val = torch.zeros(len(splits), len(y), dtype=torch.bool)
    for k, (tr, va) in enumerate(splits):
        train[k, tr] = True
        val[k, va] = True
    acc = np.zeros((len(splits), X.shape[1]))
    step = max(1, -(-X.shape[1] // 4))  # sites per batched solve and progress report
    for a in range(0, X.shape[1], step):
        b = min(X.shape[1], a + step)
        model = logistic.fit(x[:, a:b], y, train, C)
        correct = (logistic.predict(model, x[:, a:b]) == torch.from_numpy(y)[None, None]).double()  # (F, s, N)
        acc[:, a:b] = ((correct * val[:, None]).sum(-1) / val.sum(-1, keepdim=True)).numpy()
        progress(lo + (hi - lo) * b / X.shape[1])
    return acc.mean(0), acc.std(0)


def probe_weight(X: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
    """Weight of a binary probe fitted on all of X (N, D), in activation space, (D,).

    The probe reads standardised features z = (x − μ)/s, so its direction in x is coef / s."""
    model = logistic.fit(torch.from_numpy(np.ascontiguousarray(X))[:, None], y, torch.ones(1, len(y), dtype=torch.bool), C)
    return (model["coef"][0, 0, 0] / model["scale"][0, 0]).numpy()


def chance(y: np.ndarray) -> float:
    return float(np.bincount(y).max() / len(y))
