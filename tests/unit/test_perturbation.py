"""Perturbation attribution (occlusion, LIME, KernelSHAP) and its prefix-shared batched scorer.

Checked against: the plain computation (full sequences through `TargetScorer`), Captum's
FeatureAblation via LLMAttribution, the enumerated Shapley formula, and sklearn's Ridge.
"""

from __future__ import annotations

import itertools
from math import comb, factorial

import numpy as np
import pytest
import torch

from schemas.common import TextInput
from schemas.jobs import parse_job
from schemas.limits import Limits
from workers.context import Context
from workers.errors import BadInput
from workers.internals.scoring import TargetScorer, resolve_target
from workers.methods.attribution import run
from workers.perturbation.batched import MaskScorer, plan_batches
from workers.perturbation.kernel_shap import kernel_shap, shap_coalitions
from workers.perturbation.lime import lime, lime_masks, lime_weights, weighted_ridge
from workers.perturbation.occlusion import occlusion
from workers.perturbation.units import Units, make_units, replacement
from workers.progress import no_progress

PROMPT = "When Mary and John went to the store, John gave"
TARGET = " a drink to Mary."


def scorer(lm, prompt=PROMPT, target=TARGET, granularity="token", **kw) -> MaskScorer:
    t = resolve_target(lm, TextInput(prompt=prompt), target, 1, Limits())
    units = make_units(lm, t, granularity, True)
    return MaskScorer(lm, t, units, replacement(lm, "pad")[0], **kw)


def job(method: str, prompt=PROMPT, target=TARGET, **params):
    return parse_job({"kind": "attribution", "model": "tiny", "input": {"prompt": prompt, "target": target},
                      "params": {"method": method, **params}})


def _plan_cost(plan, suffix, overhead):
    return sum(overhead + (b - a) * suffix[a] for a, b in plan)


@pytest.mark.parametrize("overhead", [0, 3, 30, 10_000])
def test_batch_plan_is_the_cheapest_split(overhead):
    """Against brute force over every split of a short sorted row list into consecutive batches."""
    rng = np.random.default_rng(overhead)
    for _ in range(20):
        M, budget = int(rng.integers(1, 9)), int(rng.integers(5, 40))
        suffix = np.sort(rng.integers(1, 12, M))[::-1]
        plan = plan_batches(suffix, budget, overhead)
        assert [a for a, _ in plan] == [0, *[b for _, b in plan[:-1]]] and plan[-1][1] == M
        assert all(b - a == 1 or (b - a) * suffix[a] <= budget for a, b in plan)
        best = min(
            _plan_cost(list(zip([0, *cuts], [*cuts, M])), suffix, overhead)
            for k in range(M) for cuts in itertools.combinations(range(1, M), k)
            if all(b - a == 1 or (b - a) * suffix[a] <= budget for a, b in zip([0, *cuts], [*cuts, M]))
        )
        assert _plan_cost(plan, suffix, overhead) == pytest.approx(best)


def test_batch_plan_follows_the_overhead():
    suffix = np.arange(40, 0, -1)  # occlusion-like: one row per first changed position
    assert len(plan_batches(suffix, 10_000, 0)) == 40  # no overhead: every row runs only its own suffix
    assert len(plan_batches(suffix, 10_000, 10_000)) == 1  # launch-bound: one full batch
    capped = plan_batches(suffix, 80, 10_000)  # the budget caps rows: 2 of 40 positions, 80 of 1
    assert capped[0] == (0, 2) and capped[-1][1] == 40 and all((b - a) * suffix[a] <= 80 for a, b in capped)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("granularity", ["token", "word"])
def test_prefix_sharing_equals_plain_computation(model, granularity, request, monkeypatch):
    lm = request.getfixturevalue(model)
    monkeypatch.setenv("LANTERN_BATCH_TOKENS", "50")  # many small batches, each with its own prefix
    monkeypatch.setenv("LANTERN_FORWARD_OVERHEAD", "2")
    shared, plain = scorer(lm, granularity=granularity), scorer(lm, granularity=granularity, share_prefix=False)
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand(60, shared.units.n_free, generator=gen) > 0.2
    keep[:3] = True  # the clean input, repeated
    a, b = shared(keep), plain(keep)
    assert shared.stats.forwards > 3 and shared.stats.positions_run < plain.stats.positions_run
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and both equal full sequences with the replaced embeddings through TargetScorer
    t = resolve_target(lm, TextInput(prompt=PROMPT), TARGET, 1, Limits())
    emb = torch.where(shared.units.positions(keep, shared.L)[..., None], shared.base, shared.x)  # (M, L, d)
    with torch.no_grad():
        ref, _ = TargetScorer(lm, t)(inputs_embeds=emb)
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[0], shared.f_input)


def test_occlusion_equals_captum_feature_ablation(tiny_llama):
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    lm, tok = tiny_llama, tiny_llama.tokenizer
    ours = run(lm, job("occlusion"), Context())
    assert ours.input_tokens[0] == "<s>" and all(s == 0.0 for s in np.array(ours.scores)[:, 0])
    inp = TextTokenInput(PROMPT, tok, baselines=tok.pad_token_id, skip_tokens=[tok.bos_token_id])
    # Captum's token-by-token path without its KV cache (its cached path drifts on transformers 5)
    ref = LLMAttribution(FeatureAblation(lm.model), tok).attribute(inp, target=TARGET, use_cached_outputs=False)
    torch.testing.assert_close(torch.tensor(ours.scores)[:, 1:], ref.token_attr.float(), atol=1e-5, rtol=1e-4)
    assert ours.perturbation.positions_run < ours.perturbation.positions_plain


def test_occlusion_window_is_the_mean_over_covering_windows(tiny_gpt2):
    s = scorer(tiny_gpt2)
    got = occlusion(s, window=3)  # (T, U)
    n = s.units.n_free
    drops = []
    for k in range(n - 2):
        keep = torch.ones(1, n, dtype=torch.bool)
        keep[0, k : k + 3] = False
        drops.append(s.f_input - s(keep)[0])
    for i in range(n):
        cover = [drops[k] for k in range(max(0, i - 2), min(i, n - 3) + 1)]
        torch.testing.assert_close(got[:, i], torch.stack(cover).mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(BadInput, match="window"):
        occlusion(s, window=n + 1)


def exact_shapley(s: MaskScorer, target) -> torch.Tensor:
    """Shapley values by the enumerated formula, each coalition scored by TargetScorer directly."""
    n = s.units.n_free
    keep = torch.tensor(list(itertools.product([False, True], repeat=n)))  # (2^n, n)
    emb = torch.where(s.units.positions(keep, s.L)[..., None], s.base, s.x)
    with torch.no_grad():
        f = TargetScorer(s.lm, target)(inputs_embeds=emb)[0].double()  # (2^n, T)
    value = {tuple(k.tolist()): f[r] for r, k in enumerate(keep)}
    phi = torch.zeros(f.shape[1], n, dtype=torch.float64)
    for i in range(n):
        for k in keep:
            if k[i]:
                continue
            size = int(k.sum())
            w = factorial(size) * factorial(n - size - 1) / factorial(n)
            with_i = k.clone()
            with_i[i] = True
            phi[:, i] += w * (value[tuple(with_i.tolist())] - value[tuple(k.tolist())])
    return phi


def test_kernel_shap_approaches_exact_shapley_and_is_efficient(tiny_llama):
    prompt, target = "When Mary and John went to the store", ", John gave"
    t = resolve_target(tiny_llama, TextInput(prompt=prompt), target, 1, Limits())
    units = make_units(tiny_llama, t, "word", True)  # 8 words (multi-token units) after a fixed BOS
    assert units.n_free == 8 and units.n == 9
    s = MaskScorer(tiny_llama, t, units, replacement(tiny_llama, "pad")[0])
    exact = exact_shapley(s, t)
    # every coalition enumerated: exact Shapley values
    full, base = kernel_shap(s, 2**units.n_free, seed=0)
    torch.testing.assert_close(full.double(), exact, atol=1e-4, rtol=1e-4)
    # sampled: the error falls as samples grow (mean over seeds), efficiency holds at every budget
    f_x = s.f_input.double()
    errors = []
    for n_samples in (12, 40, 160):
        err = []
        for seed in range(4):
            phi, base = kernel_shap(s, n_samples, seed)
            torch.testing.assert_close(phi.double().sum(-1), f_x - torch.tensor(base, dtype=torch.float64),
                                       atol=1e-5, rtol=1e-5)
            err.append(float((phi.double() - exact).abs().mean()))
        errors.append(np.mean(err))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25 * errors[0]


def test_shap_coalitions_enumerate_by_kernel_weight():
    z, w = shap_coalitions(6, 62, seed=0)
    assert len(z) == 62 and len({r.tobytes() for r in z}) == 62
    expected = np.array([(6 - 1) / (comb(6, int(k)) * k * (6 - k)) for k in z.sum(1)])  # Shapley kernel
    np.testing.assert_allclose(w / w.sum(), expected / expected.sum())
    z1, w1 = shap_coalitions(10, 100, seed=3)
    z2, w2 = shap_coalitions(10, 100, seed=3)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(w1, w2)
    assert not np.array_equal(z1, shap_coalitions(10, 100, seed=4)[0])


class Additive:
    """A stand-in scorer whose metric is additive in the units: f(z) = b + z · w (T = 2)."""

    def __init__(self, w: np.ndarray, b: float = -3.0):
        self.w = torch.tensor(w, dtype=torch.float32)  # (U, 2)
        self.b = b
        self.units = Units(spans=[(i, i + 1) for i in range(len(w))], free=list(range(len(w))),
                           tokens=[str(i) for i in range(len(w))])
        self.f_input = self.b + self.w.sum(0)
        self.calls = []

    def __call__(self, keep, progress=no_progress):
        self.calls.append(keep)
        return self.b + keep.float() @ self.w


def test_kernel_shap_on_an_additive_function_returns_its_weights():
    w = np.random.default_rng(0).normal(size=(12, 2))
    phi, base = kernel_shap(Additive(w), n_samples=40, seed=1)
    np.testing.assert_allclose(phi.T.numpy(), w, atol=1e-5)
    np.testing.assert_allclose(base, [-3.0, -3.0])


def test_lime_equals_sklearn_ridge_with_lime_kernel():
    from sklearn.linear_model import Ridge

    w = np.random.default_rng(1).normal(size=(9, 2))
    fake = Additive(w)
    coef, intercept, r2 = lime(fake, n_samples=80, seed=5, kernel_width=25.0)
    keep = fake.calls[0]
    assert keep[0].all() and len(keep) == 80
    z = keep.numpy().astype(float)
    y = fake(keep).numpy()
    weights = lime_weights(keep, 25.0)
    ref = Ridge(alpha=1.0).fit(z, y, sample_weight=weights)
    np.testing.assert_allclose(coef.numpy(), ref.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-6)
    for j in range(2):
        col = Ridge(alpha=1.0).fit(z, y[:, j], sample_weight=weights)
        np.testing.assert_allclose(r2[j], col.score(z, y[:, j], sample_weight=weights), rtol=1e-6)
    # lime's kernel: d = 100 × cosine distance; one unit removed of 9 -> d = 100(1 − sqrt(8/9))
    one = torch.ones(2, 9, dtype=torch.bool)  # the clean row (weight 1) and one unit removed
    one[1, 0] = False
    d = 100 * (1 - np.sqrt(8 / 9))
    np.testing.assert_allclose(lime_weights(one, 25.0), [1.0, np.sqrt(np.exp(-(d**2) / 25.0**2))])
    np.testing.assert_allclose(weighted_ridge(z, y, weights)[0], coef.numpy(), rtol=1e-5)


@pytest.mark.parametrize("width", [1e-200, 1e-5, 1e6])
def test_lime_weights_are_finite_at_any_kernel_width(width):
    """Issue 10 item 5: kernel_width**2 underflowed to 0, the weights became 0/0 and LIME's scores NaN."""
    keep = lime_masks(12, 50, 0)
    weights = lime_weights(keep, width)
    assert np.isfinite(weights).all() and weights.max() == 1.0 and weights[0] == 1.0
    assert np.isfinite(lime_weights(keep[1:], width)).all()  # no clean row: the nearest rows weigh 1


def test_lime_with_a_tiny_kernel_width_scores_finite_numbers(tiny_llama):
    res = run(tiny_llama, job("lime", n_samples=30, kernel_width=1e-200), Context())
    values = [v for row in res.scores for v in row] + res.surrogate.intercept + res.surrogate.r2
    assert all(isinstance(v, float) and np.isfinite(v) for v in values)
    # only the clean input has weight: the surrogate explains nothing
    assert all(v == 0.0 for row in res.scores for v in row)


def test_lime_masks_are_deterministic_per_seed():
    a, b, c = lime_masks(20, 50, 7), lime_masks(20, 50, 7), lime_masks(20, 50, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    removed = (~a[1:]).sum(1)
    assert int(removed.min()) >= 1 and int(removed.max()) <= 20


def test_run_is_deterministic_and_reports_efficiency(tiny_llama):
    one = run(tiny_llama, job("kernel_shap", n_samples=64, seed=3), Context())
    two = run(tiny_llama, job("kernel_shap", n_samples=64, seed=3), Context())
    assert one.scores == two.scores and one.base_value == two.base_value
    assert max(abs(d) for d in one.efficiency.delta) < 1e-4
    sums = np.array(one.scores).sum(1)
    np.testing.assert_allclose(sums, np.array(one.efficiency.f_input) - np.array(one.base_value), atol=1e-4)
    lime_res = run(tiny_llama, job("lime", n_samples=30, granularity="word"), Context())
    assert lime_res.unit_spans and len(lime_res.scores[0]) == len(lime_res.input_tokens)
    assert lime_res.surrogate.kernel_width == 25.0 and len(lime_res.surrogate.r2) == len(lime_res.target_tokens)


def test_generated_target_and_limits(tiny_llama):
    gen = parse_job({"kind": "attribution", "model": "tiny", "input": {"prompt": PROMPT},
                     "params": {"method": "occlusion", "max_new_tokens": 3}})
    res = run(tiny_llama, gen, Context())
    assert res.target_generated and len(res.scores) == 3
    errors = job("lime", n_samples=5000).over_limits(Limits(max_samples=1000))
    assert errors and errors[0].loc == ["params", "n_samples"] and errors[0].ctx["limit"] == "max_samples"
    assert not job("occlusion", n_samples=5000).over_limits(Limits(max_samples=1000))
    with pytest.raises(BadInput, match="max_samples"):
        run(tiny_llama, job("kernel_shap", n_samples=5000), Context(limits=Limits(max_samples=1000)))
    with pytest.raises(BadInput, match="window"):
        run(tiny_llama, job("occlusion", window=100), Context())
