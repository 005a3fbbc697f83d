"""Steered inference: α·σ·θ on each selected head's output, every position of every row; α = 0 is
exactly unsteered; hooks and weights are untouched after the job (also after an exception); a
profile for another model, another owner or another shape is refused."""

from __future__ import annotations

import pytest
import torch
from redis import Redis

from common.artifacts import ArtifactStore
from schemas.jobs import parse_job
from schemas.kinds.steering_fit import SteeringRef
from workers.context import Context
from workers.errors import BadInput
from workers.internals.hooks import hook_count
from workers.interventions.applied import APPLIERS, applied
from workers.interventions.steering import apply, layer_vectors
from workers.methods import generate

HEADS = [(0, 1), (2, 4), (2, 0)]  # (layer, head) on tiny_llama: 3 layers, 6 heads, head_dim 12


@pytest.fixture(scope="module")
def store(redis_url):
    return ArtifactStore(Redis.from_url(redis_url), owner="tenant-a")


def make_profile(lm, store, heads=HEADS, model=None, **overrides) -> str:
    g = torch.Generator().manual_seed(0)
    entries = []
    for layer, head in heads:
        theta = torch.randn(12, generator=g)
        entries.append({"layer": layer, "head": head, "accuracy": 0.9, "sigma": 0.5 + 0.1 * head,
                        "direction": (theta / theta.norm()).tolist()})
    data = {"n_layers": 3, "n_heads": 6, "head_dim": 12, "heads": entries, **overrides}
    return store.put("steering-profiles", model or lm.id, data).id


def gen(lm, store, prompt="Hello world", **params):
    req = parse_job({"kind": "generate", "model": lm.id, "input": {"prompt": prompt},
                     "params": {"max_new_tokens": 8, "stop_at_eos": False, **params}})
    return generate.run(lm, req, Context(store=store))


def test_the_applier_is_registered():
    assert APPLIERS["steering"] is apply


def test_alpha_zero_is_exactly_unsteered(tiny_llama, store):
    pid = make_profile(tiny_llama, store)
    plain = gen(tiny_llama, store)
    zero = gen(tiny_llama, store, steering={"profile_id": pid, "alpha": 0})
    assert zero.token_ids == plain.token_ids
    assert zero.token_logprobs == plain.token_logprobs  # bit for bit


def test_steering_equals_an_output_bias_on_every_row_and_position(tiny_llama, store):
    """Adding v to o_proj's input is adding W_o v to its output: an independent computation."""
    lm = tiny_llama
    pid = make_profile(lm, store)
    alpha = 7.0
    data = store.get("steering-profiles", pid, lm.id).data
    ids = torch.tensor([lm.encode("Hello world, this is").ids[:5], lm.encode("The quick brown fox").ids[:5]])  # (2, 5)
    vectors = layer_vectors(lm, data, alpha)
    assert sorted(vectors) == [0, 2]
    for h in data["heads"]:  # the vector holds α·σ·θ in that head's slice only
        v = vectors[h["layer"]][h["head"] * 12 : (h["head"] + 1) * 12]
        torch.testing.assert_close(v, alpha * h["sigma"] * torch.tensor(h["direction"]))
    assert int((vectors[0] != 0).sum()) == 12

    handles = [lm.layers[l].self_attn.o_proj.register_forward_hook(
        lambda m, a, out, v=v: out + m.weight @ v) for l, v in vectors.items()]
    try:
        expected = lm.model(input_ids=ids).logits  # (2, 5, vocab)
    finally:
        for h in handles:
            h.remove()
    with applied(lm, parse_job({"kind": "generate", "model": lm.id, "input": {"prompt": "x"},
                                "params": {"steering": {"profile_id": pid, "alpha": alpha}}}).params, store):
        got = lm.model(input_ids=ids).logits
    plain = lm.model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert ((got - plain).abs().amax(-1) > 1e-4).all()  # every row, every position moved


def test_compare_baseline_returns_the_unsteered_generation(tiny_llama, store):
    pid = make_profile(tiny_llama, store)
    plain = gen(tiny_llama, store, temperature=1.0, seed=5)
    both = gen(tiny_llama, store, temperature=1.0, seed=5, steering={"profile_id": pid, "alpha": 200},
               compare_baseline=True)
    assert both.baseline_token_ids == plain.token_ids
    assert both.baseline_token_logprobs == plain.token_logprobs
    assert both.baseline_text == plain.text and both.baseline_tokens == plain.tokens
    assert both.token_logprobs != plain.token_logprobs  # the steered run differs
    assert gen(tiny_llama, store).baseline_text is None


def test_hooks_and_weights_are_untouched_after_the_job_and_after_an_exception(tiny_llama, store):
    lm = tiny_llama
    pid = make_profile(lm, store)
    before_hooks = hook_count(lm.model)
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    gen(lm, store, steering={"profile_id": pid, "alpha": 50})
    assert hook_count(lm.model) == before_hooks

    def boom(fraction):
        raise RuntimeError("canceled mid-decode")

    req = parse_job({"kind": "generate", "model": lm.id, "input": {"prompt": "Hello"},
                     "params": {"max_new_tokens": 4, "steering": {"profile_id": pid, "alpha": 50}}})
    with pytest.raises(RuntimeError):
        generate.run(lm, req, Context(progress=boom, store=store))
    assert hook_count(lm.model) == before_hooks
    assert all(torch.equal(weights[k], v) for k, v in lm.model.state_dict().items())


def test_a_profile_for_another_model_owner_or_shape_is_bad_input(tiny_llama, redis_url, store):
    lm = tiny_llama
    other_model = make_profile(lm, store, model="smollm2-135m")
    with pytest.raises(BadInput, match="made for model 'smollm2-135m'"):
        gen(lm, store, steering={"profile_id": other_model, "alpha": 1})
    mine = make_profile(lm, store)
    other_owner = ArtifactStore(Redis.from_url(redis_url), owner="tenant-b")
    with pytest.raises(BadInput, match="no steering-profiles artifact"):
        gen(lm, other_owner, steering={"profile_id": mine, "alpha": 1})
    with pytest.raises(BadInput, match="no steering-profiles artifact"):
        gen(lm, store, steering={"profile_id": "sp_" + "0" * 32, "alpha": 1})
    wrong_shape = make_profile(lm, store, head_dim=16)
    with pytest.raises(BadInput, match="has shape"):
        gen(lm, store, steering={"profile_id": wrong_shape, "alpha": 1})
    out_of_range = make_profile(lm, store, heads=[(0, 7)])
    with pytest.raises(BadInput, match="outside model"):
        gen(lm, store, steering={"profile_id": out_of_range, "alpha": 1})


def test_steering_ref_schema():
    assert SteeringRef(profile_id="sp_" + "a" * 32).alpha == 15.0
    for bad in ({"profile_id": "ed_" + "a" * 32}, {"profile_id": "sp_" + "a" * 32, "alpha": 1e6}):
        with pytest.raises(ValueError):
            SteeringRef(**bad)


def test_steering_applies_to_attribution(tiny_llama, store):
    from workers.methods import attribution

    pid = make_profile(tiny_llama, store)
    body = {"kind": "attribution", "model": tiny_llama.id, "input": {"prompt": "Hello world", "target": " this"},
            "params": {"method": "saliency"}}
    plain = attribution.run(tiny_llama, parse_job(body), Context())
    body["params"]["steering"] = {"profile_id": pid, "alpha": 100}
    req = parse_job(body)
    with pytest.raises(RuntimeError, match="artifact store"):  # the job's store, or an explicit one
        attribution.run(tiny_llama, req, Context())
    steered = attribution.run(tiny_llama, req, Context(store=store))
    assert steered.target_logprobs != plain.target_logprobs
    assert steered.scores != plain.scores


def test_steering_applies_to_logit_lens(tiny_llama, store):
    from workers.methods import logit_lens

    pid = make_profile(tiny_llama, store)

    def lens(**params):
        req = parse_job({"kind": "logit_lens", "model": tiny_llama.id, "input": {"prompt": "Hello world"},
                         "params": params})
        return logit_lens.run(tiny_llama, req, Context(store=store)).model_dump(exclude={"provenance"})

    plain = lens()
    assert lens(steering={"profile_id": pid, "alpha": 0}) == plain
    steered = lens(steering={"profile_id": pid, "alpha": 100})
    assert steered["layers"][0]["top_probs"] != plain["layers"][0]["top_probs"]  # head 0.1 is steered
