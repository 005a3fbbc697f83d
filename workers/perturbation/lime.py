"""LIME: a weighted linear surrogate fitted on random removals of units.

Ribeiro, Singh & Guestrin 2016, "Why should I trust you?", as the reference `lime` package's
`LimeTextExplainer` does it (lime/lime_text.py, lime/lime_base.py):
- row 0 is the clean input; each other row removes a uniformly drawn number of units
  (1 .. U, so the empty input can occur) chosen uniformly without replacement;
- distance: cosine distance between the row's binary vector and the all-ones vector, × 100;
- kernel: π(z) = sqrt(exp(−d² / kernel_width²)), kernel_width 25 by default (lime's text default);
- surrogate: ridge regression (α = 1, unpenalised intercept), i.e. sklearn `Ridge(alpha=1)` with
  `sample_weight=π`, fitted on all units (lime's `feature_selection="none"` / `num_features=U`).
The coefficients are the scores; the intercept and the weighted R² of the fit come back too.
We differ in the sampler's random source (numpy PCG64 seeded with `seed`, deterministic) and in
fitting one surrogate per target token at once (the design matrix is shared). Captum's `Lime`
uses Bernoulli(0.5) masks, kernel width 1 and Lasso by default; its `LLMAttribution` fits only
the summed sequence log-probability.
"""

from __future__ import annotations

import numpy as np
import torch

from workers.perturbation.batched import MaskScorer
from workers.progress import Progress, no_progress

RIDGE_ALPHA = 1.0


def lime_masks(n_free: int, n_samples: int, seed: int) -> torch.Tensor:
    """(n_samples, n_free) keep masks; row 0 is the clean input."""
    rng = np.random.Generator(np.random.PCG64(seed))
    keep = np.ones((n_samples, n_free), dtype=bool)
    sizes = rng.integers(1, n_free + 1, size=n_samples - 1)
    for row, size in enumerate(sizes, start=1):
        keep[row, rng.choice(n_free, size=size, replace=False)] = False
    return torch.from_numpy(keep)


def lime_weights(keep: torch.Tensor, kernel_width: float) -> np.ndarray:
    """π = sqrt(exp(−d²/w²)), d = 100 × cosine distance to the all-ones row (0 vector: d = 100),
    scaled so that the nearest row weighs 1.

    Computed as log π = −½ (d/w)², and normalised by the largest log-weight: `kernel_width**2`
    underflows to 0 for a tiny width (d²/w² = 0/0 at the clean row, every weight 0/0 in the fit),
    while d/w is only ever 0 or large (log π → −∞, π = 0). LIME's rows include the clean input
    (d = 0, π = 1), so the scaling changes nothing there and this is lime's kernel exactly; a tiny
    width leaves the clean row alone, and the surrogate then fits nothing (scores 0, R² 0)."""
    kept = keep.numpy().sum(1).astype(np.float64)  # (M,)
    cos = np.sqrt(kept / keep.shape[1])  # z·1 / (|z| |1|) for binary z: exactly 1 for the clean row
    d = (1.0 - cos) * 100.0
    with np.errstate(over="ignore"):
        log_w = -0.5 * (d / kernel_width) ** 2  # (M,), ≤ 0, finite or −inf
    if not np.isfinite(log_w.max()):  # every row infinitely far: the limit w → 0 keeps the nearest
        return (d == d.min()).astype(np.float64)
    return np.exp(log_w - log_w.max())


def weighted_ridge(z: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float = RIDGE_ALPHA):
    """sklearn Ridge(alpha, fit_intercept=True) with sample weights, for every column of y at once.

    z (M, U), y (M, T), w (M,) -> coef (T, U), intercept (T,), weighted R² (T,)."""
    sw = w / w.sum()
    zm, ym = sw @ z, sw @ y  # (U,), (T,)
    zc, yc = z - zm, y - ym
    zw = zc * w[:, None]
    coef = np.linalg.solve(zc.T @ zw + alpha * np.eye(z.shape[1]), zw.T @ yc)  # (U, T)
    intercept = ym - zm @ coef
    resid = y - (z @ coef + intercept)
    ss_res = (w[:, None] * resid**2).sum(0)
    ss_tot = (w[:, None] * yc**2).sum(0)
    r2 = 1.0 - np.divide(ss_res, ss_tot, out=np.zeros_like(ss_res), where=ss_tot > 0)
    return coef.T, intercept, r2


def lime(scorer: MaskScorer, n_samples: int, seed: int, kernel_width: float = 25.0,
         progress: Progress = no_progress):
    """(T, U_free) coefficients, (T,) intercepts, (T,) weighted R²."""
    keep = lime_masks(scorer.units.n_free, max(2, n_samples), seed)
    y = scorer(keep, progress).double().cpu().numpy()  # (M, T)
    coef, intercept, r2 = weighted_ridge(keep.numpy().astype(np.float64), y, lime_weights(keep, kernel_width))
    return torch.from_numpy(coef).float(), intercept.tolist(), r2.tolist()
