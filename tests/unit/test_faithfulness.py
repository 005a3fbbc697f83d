"""Faithfulness (ERASER comprehensiveness/sufficiency, AOPC, deletion curve) on a known additive
function, and through the attribution method on a tiny model (perturbation and gradient)."""

from __future__ import annotations

import math

import numpy as np
import torch

from schemas.jobs import parse_job
from workers.context import Context
from workers.methods.attribution import run
from workers.perturbation.faithfulness import KS, auc, evaluate, faithfulness_masks
from workers.perturbation.units import Units
from workers.progress import no_progress


class Additive:
    """f(z) = z · w per target token (T = 2): removing unit i lowers F = Σ_t f_t by Σ_t w_it."""

    def __init__(self, w: np.ndarray):
        self.w = torch.tensor(w, dtype=torch.float64)  # (U, 2)
        n = len(w)
        self.units = Units(spans=[(i, i + 1) for i in range(n)], free=list(range(n)), tokens=[""] * n)
        self.f_input = self.w.sum(0)

    def __call__(self, keep, progress=no_progress):
        return keep.double() @ self.w


def test_masks_remove_the_top_k_percent():
    keep, parts = faithfulness_masks([3, 0, 2, 1, 4, 6, 5], 7, seed=0)
    comp = keep[parts["comprehensiveness"]]
    assert [int((~r).sum()) for r in comp] == [math.ceil(k * 7 / 100) for k in KS]
    assert not comp[0][3] and comp[0].sum() == 6  # 10% of 7 units: the top one
    assert torch.equal(keep[parts["sufficiency"]], ~comp)
    deletion = keep[parts["deletion"]]
    assert len(deletion) == 8 and deletion[0].all() and not deletion[-1].any()


def test_scores_on_an_additive_function():
    w = np.array([[3.0, 1.0], [-1.0, 0.0], [0.5, 0.5], [2.0, 0.0], [0.0, 0.1]])
    f = Additive(w)
    total = w.sum(1)  # per unit contribution to F
    order = np.argsort(-total, kind="stable")
    res = evaluate(f, torch.tensor(w.T), "pad", seed=0)
    for k, comp, suff in zip(KS, res.comprehensiveness, res.sufficiency):
        m = math.ceil(k * 5 / 100)
        assert math.isclose(comp, total[order[:m]].sum(), abs_tol=1e-9)
        assert math.isclose(suff, total[order[m:]].sum(), abs_tol=1e-9)
    assert math.isclose(res.aopc_comprehensiveness, float(np.mean(res.comprehensiveness)))
    expected = [total.sum() - total[order[:m]].sum() for m in range(6)]
    np.testing.assert_allclose(res.deletion_curve, expected)
    assert res.deletion_auc <= res.random_deletion_auc  # the true ranking falls fastest
    # a reversed ranking is the least faithful one
    worse = evaluate(f, -torch.tensor(w.T), "pad", seed=0)
    assert worse.aopc_comprehensiveness < res.aopc_comprehensiveness
    assert worse.deletion_auc > res.deletion_auc


def test_auc_is_the_trapezoid_over_the_unit_interval():
    assert math.isclose(auc([1.0, 0.0]), 0.5)
    assert math.isclose(auc([1.0, 1.0, 0.0]), 0.75)


def job(method: str, **params):
    return parse_job({"kind": "attribution", "model": "tiny",
                      "input": {"prompt": "The capital of France is", "target": " Paris. The"},
                      "params": {"method": method, "faithfulness": True, **params}})


def test_faithfulness_on_perturbation_and_gradient_jobs(tiny_llama):
    occ = run(tiny_llama, job("occlusion"), Context())
    ig = run(tiny_llama, job("input_x_gradient", granularity="word"), Context())
    shap = run(tiny_llama, job("kernel_shap", n_samples=16), Context())
    for res in (occ, ig, shap):
        fa = res.faithfulness
        assert fa.replacement == "pad token '<pad>' (id 0)" and fa.ks == list(KS)
        assert math.isclose(fa.f_input, sum(res.target_logprobs), rel_tol=1e-5)
        assert math.isclose(fa.deletion_curve[0], fa.f_input, rel_tol=1e-5)
        assert math.isclose(fa.sufficiency[-1], 0.0, abs_tol=1e-5)  # all units kept
        assert math.isclose(fa.comprehensiveness[-1], fa.f_input - fa.deletion_curve[-1], rel_tol=1e-5)
    # everything removed is the same input whatever ranked it: KernelSHAP's base value
    assert math.isclose(occ.faithfulness.deletion_curve[-1], sum(shap.base_value), rel_tol=1e-5)
    # occlusion ranks by exactly the single-unit drop, so its top-1 removal is the largest single drop
    top1 = max(np.array(occ.scores).sum(0))
    assert math.isclose(occ.faithfulness.deletion_curve[0] - occ.faithfulness.deletion_curve[1], top1, rel_tol=1e-4)
