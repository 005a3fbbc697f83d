"""Many L2-regularised logistic regressions at once: every site × every fold in one batched Newton solve.

The objective is scikit-learn's `LogisticRegression(C=C)` (lbfgs, L2, unpenalised intercept) on
standardised features (`StandardScaler` fitted on the training rows):

    min_β  C · Σ_i w_i · log(1 + exp(−s_i · zᵢᵀβ)) + ½ ‖β_w‖²,   s_i = ±1,

strictly convex, so Newton's method (with step halving) reaches the same optimum scikit-learn's
L-BFGS does (tested against it). ITI needs (layers × heads) × folds separate fits, which the
batched solve does in one go.
More than two classes: one-vs-rest (a binary problem per class, prediction by the largest score).

Folds share one tensor: each fold's training rows carry weight 1 and the others 0.
"""

from __future__ import annotations

import numpy as np
import torch

from workers.progress import checkpoint

MAX_ELEMENTS = 8_000_000  # float64 elements of the largest batched tensor (about 64 MB)


def _standardise(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and sd over rows: x (N, S, D), w (F, N) -> (F, S, D) each; sd 0 -> 1 (as sklearn)."""
    total = w.sum(1)[:, None, None]  # (F, 1, 1)
    mu = torch.einsum("fn,nsd->fsd", w, x) / total
    var = torch.einsum("fn,fnsd->fsd", w, (x[None] - mu[:, None]) ** 2) / total
    sd = var.sqrt()
    return mu, torch.where(sd > 0, sd, torch.ones_like(sd))


def _newton(z: torch.Tensor, t: torch.Tensor, w: torch.Tensor, C: float, iters: int = 100,
            tol: float = 1e-9) -> torch.Tensor:
    """β (B, D+1) minimising C Σ w·logloss + ½‖β[:-1]‖²; z (B, N, D+1) with a ones column last, t, w (B, N)."""
    B, _, d1 = z.shape
    reg = torch.ones(d1, dtype=z.dtype, device=z.device)
    reg[-1] = 0.0  # the intercept is not penalised
    beta = torch.zeros(B, d1, dtype=z.dtype, device=z.device)

    def loss(b: torch.Tensor) -> torch.Tensor:
        eta = torch.einsum("bnd,bd->bn", z, b)
        return C * (w * (torch.nn.functional.softplus(eta) - t * eta)).sum(1) + 0.5 * (reg * b * b).sum(1)

    current = loss(beta)
    for _ in range(iters):
        checkpoint()  # cancel and deadline of the running job, per Newton step
        p = torch.sigmoid(torch.einsum("bnd,bd->bn", z, beta))  # (B, N)
        grad = C * torch.einsum("bnd,bn->bd", z, w * (p - t)) + reg * beta
        hess = C * torch.einsum("bnd,bn,bne->bde", z, w * p * (1 - p), z) + torch.diag(reg)
        hess[:, -1, -1] += 1e-12  # an intercept with all-zero curvature (separated) stays solvable
        step = torch.linalg.solve(hess, grad)  # (B, D+1)
        scale = torch.ones(B, 1, dtype=z.dtype, device=z.device)
        for _ in range(30):  # halve where the full step would raise the loss
            new = loss(beta - scale * step)
            worse = new > current + 1e-12 * current.abs()
            if not worse.any():
                break
            scale = torch.where(worse[:, None], scale / 2, scale)
        beta = beta - scale * step
        current = loss(beta)
        if float((scale * step).abs().max()) < tol:
            break
    return beta


def fit(x: torch.Tensor, y: np.ndarray, train: torch.Tensor, C: float = 1.0) -> dict[str, torch.Tensor]:
    """Fit every (fold, site): x (N, S, D) activations, y (N,) class indices, train (F, N) bool.

    Returns `coef` (F, S, K, D) in standardised units, `intercept` (F, S, K), `mean`, `scale`
    (F, S, D); K = 1 for two classes (the score of class 1), else one-vs-rest per class."""
    x = x.to(torch.float64)
    n, s, d = x.shape
    f = train.shape[0]
    w = train.to(torch.float64)  # (F, N)
    n_classes = int(y.max()) + 1
    targets = [y == 1] if n_classes == 2 else [y == k for k in range(n_classes)]
    K = len(targets)
    mean, scale = _standardise(x, w)  # (F, S, D)
    coef = torch.zeros(f, s, K, d, dtype=torch.float64)
    intercept = torch.zeros(f, s, K, dtype=torch.float64)
    per_site = f * K * max(n * (d + 1), (d + 1) ** 2)
    chunk = max(1, MAX_ELEMENTS // per_site)
    for lo in range(0, s, chunk):
        hi = min(s, lo + chunk)
        z = (x[None, :, lo:hi] - mean[:, None, lo:hi]) / scale[:, None, lo:hi]  # (F, N, s, D)
        z = torch.cat([z, torch.ones(*z.shape[:-1], 1, dtype=z.dtype)], -1)  # (F, N, s, D+1)
        z = z.permute(0, 2, 1, 3)[:, :, None].expand(f, hi - lo, K, n, d + 1)  # (F, s, K, N, D+1)
        t = torch.tensor(np.stack(targets), dtype=torch.float64)  # (K, N)
        t = t[None, None].expand(f, hi - lo, K, n)
        ww = w[:, None, None].expand(f, hi - lo, K, n)
        beta = _newton(z.reshape(-1, n, d + 1), t.reshape(-1, n), ww.reshape(-1, n), C)
        beta = beta.reshape(f, hi - lo, K, d + 1)
        coef[:, lo:hi] = beta[..., :-1]
        intercept[:, lo:hi] = beta[..., -1]
    return {"coef": coef, "intercept": intercept, "mean": mean, "scale": scale}


def predict(model: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Class index per (fold, site, row): x (N, S, D) -> (F, S, N), as sklearn's `predict`."""
    z = (x.to(torch.float64)[None] - model["mean"][:, None]) / model["scale"][:, None]  # (F, N, S, D)
    score = torch.einsum("fnsd,fskd->fskn", z, model["coef"]) + model["intercept"][..., None]  # (F, S, K, N)
    if score.shape[2] == 1:
        return (score[:, :, 0] > 0).long()
    return score.argmax(2)
