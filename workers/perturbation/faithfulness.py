"""How faithful an attribution is: remove or keep its top units and watch the target metric.

- comprehensiveness (DeYoung et al. 2020, ERASER): F(x) − F(x without the top-k% units); high
  when the units the attribution ranks first matter.
- sufficiency (ERASER): F(x) − F(only the top-k% units kept); low (or negative) when they suffice.
- AOPC: the mean of each over k = 10, 20, …, 100 (ERASER's AOPC uses bins {1, 5, 10, 20, 50};
  the bins here are the issue's). k% of U free units is ceil(k·U/100) units.
- deletion curve (Petsiuk et al. 2018, RISE): F after removing the top 0, 1, …, U units in rank
  order, and its area (trapezoid over the removed fraction 0..1); a faithful ranking falls fast.
- the same curve for a random order (seeded): the reference the deletion AUC should beat.

F is the sum over target tokens of the target metric (for `logprob`, the log-probability of the
whole target), and units are ranked by their score summed over target tokens, highest first
(signed: a unit that lowers the target is removed last). "Removed" means every token of the unit
has its input embedding replaced by the job's `baseline` (the pad token by default: the result's
`replacement` names it), exactly as the perturbation methods remove units. Special tokens (BOS,
chat markers) stay when `fix_special_tokens`. All masks run through `MaskScorer`, so the checks
cost one batched, prefix-shared pass (about U + 20 perturbations).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from schemas.kinds.attribution import Faithfulness
from workers.perturbation.batched import MaskScorer
from workers.progress import Progress, no_progress

KS = tuple(range(10, 101, 10))


def faithfulness_masks(order: list[int], n: int, seed: int) -> tuple[torch.Tensor, dict[str, slice]]:
    """Keep masks (rows, n) for comprehensiveness, sufficiency, deletion and random deletion."""
    rows: list[torch.Tensor] = []
    parts: dict[str, slice] = {}

    def add(name: str, masks: list[torch.Tensor]) -> None:
        parts[name] = slice(len(rows), len(rows) + len(masks))
        rows.extend(masks)

    def top(order_: list[int], m: int) -> torch.Tensor:
        keep = torch.ones(n, dtype=torch.bool)
        keep[order_[:m]] = False
        return keep  # top m removed

    counts = [math.ceil(k * n / 100) for k in KS]
    add("comprehensiveness", [top(order, m) for m in counts])
    add("sufficiency", [~top(order, m) for m in counts])
    add("deletion", [top(order, m) for m in range(n + 1)])
    rand = np.random.Generator(np.random.PCG64(seed)).permutation(n).tolist()
    add("random_deletion", [top(rand, m) for m in range(n + 1)])
    return torch.stack(rows), parts


def auc(curve: list[float]) -> float:
    """Trapezoid area under a curve sampled evenly over [0, 1]."""
    if len(curve) < 2:
        return float(curve[0]) if curve else 0.0
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def evaluate(scorer: MaskScorer, free_scores: torch.Tensor, replacement: str, seed: int = 0,
             progress: Progress = no_progress) -> Faithfulness:
    """Faithfulness of (T, U_free) scores over the scorer's free units."""
    n = scorer.units.n_free
    rank = free_scores.float().sum(0).cpu()  # (U_free,)
    order = torch.argsort(-rank, stable=True).tolist()
    keep, parts = faithfulness_masks(order, n, seed)
    f = scorer(keep, progress).sum(-1).double().cpu()  # (rows,)
    f_x = float(scorer.f_input.sum())
    comp = (f_x - f[parts["comprehensiveness"]]).tolist()
    suff = (f_x - f[parts["sufficiency"]]).tolist()
    deletion = f[parts["deletion"]].tolist()
    random_deletion = f[parts["random_deletion"]].tolist()
    return Faithfulness(
        replacement=replacement, ks=list(KS), f_input=f_x,
        comprehensiveness=comp, sufficiency=suff,
        aopc_comprehensiveness=float(np.mean(comp)), aopc_sufficiency=float(np.mean(suff)),
        deletion_curve=deletion, deletion_auc=auc(deletion),
        random_deletion_curve=random_deletion, random_deletion_auc=auc(random_deletion),
    )
