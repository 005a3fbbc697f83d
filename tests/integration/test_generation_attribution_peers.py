"""Lantern's `attribution` of a generated continuation against the peers on the bundled SmolLM2-135M,
the same prompt, continuation tokens, baseline and steps (bench/bench_generation_attribution.py runs
the same code at 8 and 32 tokens and times it): Captum's `LLMGradientAttribution`
(`LayerIntegratedGradients`, `LayerGradientXActivation`) and `LLMAttribution(FeatureAblation)` with
`TextTokenInput` compute the same per-token scores, and Inseq's input×gradient too (its IG and
occlusion use another baseline and also perturb the earlier continuation tokens: different
definitions, not compared here). Numbers only.

Captum comes with the dev extra; Inseq with the Makefile's peers target (`$(VENV)/.peers-installed`,
--no-deps); a test whose peer is missing skips and says so."""

from __future__ import annotations

import pytest

pytest.importorskip("captum", reason="captum not installed: pip install -e '.[dev]'")

import bench.bench_generation_attribution as gen  # noqa: E402

PROMPT = "When Mary and John went to the store, John gave a drink to"
T = 3  # continuation tokens
STEPS = 4


@pytest.fixture(scope="module")
def case(smollm2):
    return gen.Case(smollm2, PROMPT, T)


@pytest.fixture
def steps(monkeypatch):
    monkeypatch.setattr(gen, "STEPS", STEPS)


def close(ours, theirs, rel):
    c = gen.agreement(ours, theirs)
    assert ours.shape == theirs.shape and ours.shape[0] == T, (ours.shape, theirs.shape)
    assert c["max_abs"] <= rel * c["scale"] + 1e-5, c
    assert c["scale"] > 1e-3, c  # something was compared
    return c


def test_integrated_gradients_equals_captum(smollm2, case, steps):
    with gen.as_loaded(smollm2):
        ours, res = gen.lantern(smollm2, case, "integrated_gradients")()
        theirs = gen.captum(smollm2, case, "integrated_gradients")()
    assert res.convergence.n_steps == STEPS and len(res.target_tokens) == T
    close(ours, theirs, 1e-3)
    # completeness: both sums of scores against Lantern's f(x) - f(x'), the same error on both sides
    checks = gen.checks(smollm2, case, "integrated_gradients",
                        {"Lantern": (ours, res), "Captum": theirs, "Inseq": theirs})
    assert checks["completeness"]["captum"] == pytest.approx(checks["completeness"]["lantern"], rel=1e-2, abs=1e-3)


def test_input_x_gradient_equals_captum(smollm2, case):
    with gen.as_loaded(smollm2):
        ours, _ = gen.lantern(smollm2, case, "input_x_gradient")()
        theirs = gen.captum(smollm2, case, "input_x_gradient")()
    close(ours, theirs, 1e-4)


def test_occlusion_equals_captum(smollm2, case):
    with gen.as_loaded(smollm2):
        ours, _ = gen.lantern(smollm2, case, "occlusion")()
        theirs = gen.captum(smollm2, case, "occlusion")()  # one forward per perturbation, no KV cache
    close(ours, theirs, 1e-4)


def test_input_x_gradient_equals_inseq(smollm2, case):
    pytest.importorskip("inseq", reason="inseq not installed: make .venv/.peers-installed")
    with gen.as_loaded(smollm2):
        ours, _ = gen.lantern(smollm2, case, "input_x_gradient")()
        theirs = gen.inseq(smollm2, case, "input_x_gradient")()
    close(ours, theirs, 1e-4)
