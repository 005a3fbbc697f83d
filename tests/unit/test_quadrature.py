import numpy as np
import pytest
from captum.attr._utils.approximation_methods import approximation_parameters

from workers.numerics.quadrature import RULES, quadrature


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [2, 7, 50])
def test_quadrature_matches_captum(rule, n):
    alphas, weights = quadrature(rule, n)
    step_fn, alpha_fn = approximation_parameters(rule)
    np.testing.assert_allclose(alphas, alpha_fn(n), atol=1e-7)
    # Captum's trapezoid uses step 1/n on n nodes of linspace(0, 1, n): its weights sum to (n-1)/n.
    scale = n / (n - 1) if rule == "riemann_trapezoid" else 1.0
    np.testing.assert_allclose(weights, np.array(step_fn(n)) * scale, atol=1e-7)
    assert sum(weights) == pytest.approx(1.0)


def test_gauss_legendre_integrates_polynomials_exactly():
    alphas, weights = quadrature("gausslegendre", 4)  # exact up to degree 7
    assert sum(w * a**7 for a, w in zip(alphas, weights)) == pytest.approx(1 / 8)
