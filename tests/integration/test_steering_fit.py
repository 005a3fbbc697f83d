"""`steering_fit` finds a planted head and direction (tiny LLaMA), stores a complete profile, and
on SmolLM2 with a true/false question set its best head is well above chance and steering toward
"true" raises the true-over-false log-probability margin on held-out questions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from redis import Redis

from common.artifacts import ArtifactStore
from schemas.jobs import parse_job
from schemas.limits import Limits
from tests.unit.test_probe import planted, planted_vector, random_texts
from workers.context import Context
from workers.errors import BadInput
from workers.internals.activations import collect
from workers.methods import steering_fit

LAYER, HEAD = 2, 1  # planted in the last block: no later head can read it


@pytest.fixture(scope="module")
def store(redis_url):
    return ArtifactStore(Redis.from_url(redis_url), owner="tenant-fit")


def fit_job(lm, examples, **params):
    return parse_job({"kind": "steering_fit", "model": lm.id, "input": {"examples": examples}, "params": params})


@pytest.fixture(scope="module")
def planted_fit(tiny_llama, store):
    """Prompt + completion pairs with random true/false labels; true rows shifted along v at (LAYER, HEAD)."""
    lm = tiny_llama
    texts = random_texts(120, seed=11)
    rng = np.random.default_rng(1)
    labels = rng.permutation([True] * 60 + [False] * 60).tolist()
    examples = [{"prompt": t.rsplit(" ", 1)[0], "completion": " " + t.rsplit(" ", 1)[1], "label": y}
                for t, y in zip(texts, labels)]
    req = fit_job(lm, examples, n_heads=3)
    ids = [steering_fit.example_ids(lm, e, Limits()) for e in req.input.examples]
    marked = {tuple(s) for s, y in zip(ids, labels) if y}
    noise = collect(lm, ids, "attn_head", [LAYER])[:, 0, HEAD].std(0).mean()  # per-dim sd of the head output
    v = planted_vector(12, 5 * float(noise))
    with planted(lm, marked, LAYER, HEAD, v):
        mass_mean = steering_fit.run(lm, req, Context(store=store))
        probe_dir = steering_fit.run(lm, fit_job(lm, examples, n_heads=1, direction="probe"), Context(store=store))
        acts = collect(lm, ids, "attn_head", [LAYER])[:, 0, HEAD].double()  # (N, head_dim), with the plant
    return mass_mean, probe_dir, v, acts, np.array(labels)


def test_the_planted_head_is_selected_first(planted_fit):
    res, _, _, _, _ = planted_fit
    assert (res.heads[0].layer, res.heads[0].head) == (LAYER, HEAD)
    assert res.heads[0].accuracy >= 0.95
    grid = np.array(res.accuracy_grid)  # (layers, heads)
    assert grid.shape == (3, 6) and grid[LAYER, HEAD] == res.heads[0].accuracy
    assert np.delete(grid.ravel(), LAYER * 6 + HEAD).max() < 0.8
    assert len(res.heads) == 3 and res.chance == 0.5 and res.direction == "mass_mean"


def test_directions_are_close_to_the_planted_one_and_sigma_is_the_projected_sd(planted_fit, store, tiny_llama):
    res, probe_res, v, acts, labels = planted_fit
    unit = v.double() / v.norm()
    profile = store.get("steering-profiles", res.profile_id, tiny_llama.id)
    head = profile.data["heads"][0]
    theta = torch.tensor(head["direction"], dtype=torch.float64)
    assert theta.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert float(theta @ unit) > 0.95  # mass mean: mean(true) − mean(false) ∝ v + noise
    # independent: the mass-mean shift and the sd of the projections, computed here in torch
    shift = acts[labels].mean(0) - acts[~labels].mean(0)
    torch.testing.assert_close(theta, shift / shift.norm(), atol=1e-5, rtol=1e-4)
    assert head["sigma"] == pytest.approx(float((acts @ theta).std(unbiased=False)), rel=1e-4)
    probe_theta = torch.tensor(store.get("steering-profiles", probe_res.profile_id, tiny_llama.id)
                               .data["heads"][0]["direction"], dtype=torch.float64)
    assert float(probe_theta @ unit) > 0.7  # the probe's weight also points along the plant


def test_the_profile_holds_everything_a_steered_job_needs(planted_fit, store, tiny_llama):
    res = planted_fit[0]
    view = store.get("steering-profiles", res.profile_id, tiny_llama.id)
    assert view.owner == "tenant-fit" and view.model == tiny_llama.id and view.created_at is not None
    d = view.data
    assert (d["n_layers"], d["n_heads"], d["head_dim"]) == (3, 6, 12)
    assert d["params"]["n_heads"] == 3 and d["params"]["seed"] == 0 and d["params"]["direction"] == "mass_mean"
    assert d["n_examples"] == 120 and d["n_true"] == 60 and d["accuracy_grid"] == res.accuracy_grid
    assert [(h["layer"], h["head"]) for h in d["heads"]] == [(h.layer, h.head) for h in res.heads]


def test_default_head_count_scales_the_papers_share():
    assert steering_fit.default_n_heads(32, 32) == 48  # LLaMA-7B, as the paper
    assert steering_fit.default_n_heads(30, 9) == 13  # SmolLM2-135M
    assert steering_fit.default_n_heads(3, 6) == 1


def test_bad_requests(tiny_llama, store):
    examples = [{"prompt": t, "completion": " x", "label": i % 2 == 0} for i, t in enumerate(random_texts(10))]
    with pytest.raises(BadInput, match="over the model's 18 heads"):
        steering_fit.run(tiny_llama, fit_job(tiny_llama, examples, n_heads=19, folds=2), Context(store=store))
    with pytest.raises(ValueError, match="both true and false"):
        fit_job(tiny_llama, [{**e, "label": True} for e in examples])
    long = [{**e, "prompt": "hello " * 300} for e in examples]
    with pytest.raises(BadInput, match="max_prompt_tokens") as err:
        steering_fit.run(tiny_llama, fit_job(tiny_llama, long, folds=2), Context(store=store))
    assert err.value.errors[0].loc == ["input", "examples", 0]


# -- SmolLM2: truthfulness figures (the full version is in bench/bench_steering.py, docs/steering.md) --


@pytest.mark.slow
def test_smollm2_truth_probe_and_steering_raise_the_true_margin(smollm2, store):
    from bench.bench_steering import examples as qa_examples
    from bench.bench_steering import items, margins, split, steered_margins

    train, test = split(items())
    res = steering_fit.run(smollm2, fit_job(smollm2, qa_examples(train), folds=5, seed=0), Context(store=store))
    best = max(h.accuracy for h in res.heads)
    assert best >= 0.7 and res.chance == 0.5  # well above chance (measured 0.76) on 50 questions × 2 answers
    base = margins(smollm2, test)
    steered = steered_margins(smollm2, store, res.profile_id, 5.0, test)  # measured: +0.91 nats, 14/20 rose
    assert steered.mean() > base.mean() + 0.3
    assert (steered > base).mean() >= 0.6
    zero = steered_margins(smollm2, store, res.profile_id, 0.0, test)
    assert np.array_equal(zero, base)
