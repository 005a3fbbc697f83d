"""KernelSHAP: Shapley values as the solution of a weighted, efficiency-constrained regression.

Lundberg & Lee 2017, "A unified approach to interpreting model predictions", Theorem 2: with the
Shapley kernel π(z) = (U − 1) / (C(U, |z|) |z| (U − |z|)) the weighted least-squares fit of
f(z) = φ₀ + Σ φ_i z_i over all coalitions z gives the Shapley values. As the reference
implementation (shap's `KernelExplainer`, shap/explainers/_kernel.py) does:
- coalition sizes are taken in pairs (s, U − s) from the outside in; a size pair whose subsets
  all fit in the remaining budget is enumerated with its exact kernel weight;
- the rest of the budget is sampled: a size from the remaining kernel mass, a uniform subset of
  that size and its complement (paired sampling); repeats add weight instead of a sample; the
  sampled weights are scaled to the kernel mass left;
- the regression is solved with the efficiency constraint Σ φ_i = f(x) − f(∅) built in (the last
  unit is eliminated), so efficiency holds to float precision whatever the budget.
With n_samples ≥ 2^U − 2 every coalition is enumerated and the values are the exact Shapley
values (tested against the enumerated Shapley formula). φ₀ = f(∅) = f(all units removed) is
`base_value`. We differ from shap in the random source (numpy PCG64 seeded with `seed`), in
having no L1 feature selection (shap's `l1_reg="auto"` selects features when samples are few;
we return the least-squares solution of minimum norm), and in solving every target token at once.
Captum's `KernelShap` samples sizes the same way but fits an unconstrained linear model, so its
values do not add up exactly.
"""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import torch

from workers.perturbation.batched import MaskScorer
from workers.progress import Progress, no_progress


def shap_coalitions(n: int, n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (M, n) in {0,1} (1 = unit present) and their kernel weights (M,), shap's scheme."""
    n_samples = min(n_samples, 2**n - 2)
    n_sizes = int(np.ceil((n - 1) / 2))
    n_paired = int(np.floor((n - 1) / 2))
    weight = np.array([(n - 1.0) / (s * (n - s)) for s in range(1, n_sizes + 1)])
    weight[:n_paired] *= 2
    weight /= weight.sum()
    rows: list[np.ndarray] = []
    weights: list[float] = []
    left = n_samples
    remaining = weight.copy()
    n_full = 0
    for s in range(1, n_sizes + 1):
        paired = s <= n_paired
        n_sub = comb(n, s) * (2 if paired else 1)
        if left * remaining[s - 1] / n_sub < 1.0 - 1e-8:
            break
        n_full += 1
        left -= n_sub
        if remaining[s - 1] < 1.0:
            remaining /= 1.0 - remaining[s - 1]
        w = weight[s - 1] / comb(n, s) / (2 if paired else 1)
        for inds in itertools.combinations(range(n), s):
            z = np.zeros(n)
            z[list(inds)] = 1.0
            rows.append(z)
            weights.append(w)
            if paired:
                rows.append(1.0 - z)
                weights.append(w)
    n_fixed = len(rows)
    if n_full < n_sizes and left > 0:
        rng = np.random.Generator(np.random.PCG64(seed))
        probs = weight.copy()
        probs[:n_paired] /= 2  # two samples (a subset and its complement) per draw
        probs = probs[n_full:] / probs[n_full:].sum()
        seen: dict[bytes, int] = {}
        draws = rng.choice(len(probs), 4 * left, p=probs)
        for d in draws:
            if left <= 0:
                break
            s = int(d) + n_full + 1
            z = np.zeros(n)
            z[rng.permutation(n)[:s]] = 1.0
            key = z.tobytes()
            if key in seen:
                weights[seen[key]] += 1.0
                if s <= n_paired:
                    weights[seen[key] + 1] += 1.0
                continue
            seen[key] = len(rows)
            rows.append(z)
            weights.append(1.0)
            left -= 1
            if s <= n_paired and left > 0:
                rows.append(1.0 - z)
                weights.append(1.0)
                left -= 1
        w = np.array(weights[n_fixed:])
        weights[n_fixed:] = list(w * weight[n_full:].sum() / w.sum())
    return np.array(rows).reshape(-1, n), np.array(weights)


def solve_constrained(z: np.ndarray, y: np.ndarray, w: np.ndarray, f_x: np.ndarray, f_0: np.ndarray) -> np.ndarray:
    """Weighted LS of y − f_0 on z subject to Σφ = f_x − f_0, per column: z (M,U), y (M,T) -> φ (T,U)."""
    delta = f_x - f_0  # (T,)
    y_adj = (y - f_0) - z[:, -1:] * delta  # (M, T)
    x_adj = z[:, :-1] - z[:, -1:]  # (M, U-1)
    sw = np.sqrt(w)[:, None]
    head, *_ = np.linalg.lstsq(x_adj * sw, y_adj * sw, rcond=None)  # (U-1, T), minimum norm
    last = delta - head.sum(0)
    return np.concatenate([head, last[None]], 0).T


def kernel_shap(scorer: MaskScorer, n_samples: int, seed: int, progress: Progress = no_progress):
    """(T, U_free) Shapley value estimates and the base value f(∅) (T,)."""
    n = scorer.units.n_free
    f_x = scorer.f_input.double().cpu().numpy()  # (T,)
    if n == 1:  # a single unit takes the whole difference
        f_0 = scorer(torch.zeros(1, 1, dtype=torch.bool)).double().cpu().numpy()[0]
        return torch.from_numpy((f_x - f_0)[:, None]).float(), f_0.tolist()
    z, w = shap_coalitions(n, n_samples, seed)
    keep = torch.from_numpy(np.concatenate([np.zeros((1, n)), z]) > 0.5)  # row 0: everything removed
    y = scorer(keep, progress).double().cpu().numpy()  # (M+1, T)
    f_0 = y[0]
    phi = solve_constrained(z, y[1:], w, f_x, f_0)
    return torch.from_numpy(phi).float(), f_0.tolist()
