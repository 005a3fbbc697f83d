"""Occlusion: remove a unit (or a window of units) and measure the drop of the target metric.

Zeiler & Fergus 2014 (occlusion), as Captum's `FeatureAblation` (window 1) and `Occlusion`
(sliding windows, stride 1) compute it: score_i = f(x) − f(x with unit i replaced), per target
token. With `window` w > 1 every window of w consecutive free units is removed once and a unit's
score is the mean over the windows that cover it (Captum's Occlusion averages the same way).
Where we differ from Captum's `LLMAttribution(FeatureAblation)`: one batched forward per group of
perturbations scores all target tokens, and prefixes are shared (`batched.MaskScorer`); the
numbers are the same (tested against Captum on a tiny model).
"""

from __future__ import annotations

import torch

from workers.errors import BadInput
from workers.perturbation.batched import MaskScorer
from workers.progress import Progress, no_progress


def occlusion_masks(n_free: int, window: int) -> torch.Tensor:
    """(n_free − window + 1, n_free) keep masks: window k removes units k .. k+window−1."""
    if window > n_free:
        raise BadInput(f"window={window} is larger than the {n_free} units that can be removed")
    n_win = n_free - window + 1
    keep = torch.ones(n_win, n_free, dtype=torch.bool)
    for k in range(n_win):
        keep[k, k : k + window] = False
    return keep


def occlusion(scorer: MaskScorer, window: int = 1, progress: Progress = no_progress) -> torch.Tensor:
    """(T, U_free) scores: mean over covering windows of f(x) − f(x without the window)."""
    keep = occlusion_masks(scorer.units.n_free, window)  # (W, U_free)
    drop = scorer.f_input[None] - scorer(keep, progress)  # (W, T)
    removed = (~keep).float().to(drop.device)  # (W, U_free)
    return (removed.T @ drop / removed.sum(0)[:, None]).T  # (T, U_free)
