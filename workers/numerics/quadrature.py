"""Quadrature rules for path integrals over α ∈ [0, 1], under Captum's names and conventions
(captum/attr/_utils/approximation_methods.py), so IG results compare with Captum step for step.

One deliberate difference: Captum's `riemann_trapezoid` puts n nodes on linspace(0, 1, n) but
weights them 1/n (halved at the ends), so its weights sum to (n-1)/n and every attribution is
scaled by that factor; here the trapezoid rule proper is used (step 1/(n-1), weights sum to 1).
"""

from __future__ import annotations

import numpy as np

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """(alphas, weights) with Σ weights = 1, so Σ_k w_k g(α_k) ≈ ∫_0^1 g(α) dα."""
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)  # nodes on [-1, 1]
        return list(0.5 * (x + 1.0)), list(0.5 * w)
    if rule == "riemann_trapezoid":
        if n_steps < 2:
            raise ValueError("riemann_trapezoid needs n_steps >= 2")
        alphas = np.linspace(0.0, 1.0, n_steps)
        weights = np.full(n_steps, 1.0 / (n_steps - 1))
        weights[[0, -1]] /= 2.0
        return list(alphas), list(weights)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(rule)
    if offset is None:
        raise ValueError(f"unknown rule {rule!r}; known: {RULES}")
    return [(k + offset) / n_steps for k in range(n_steps)], [1.0 / n_steps] * n_steps
