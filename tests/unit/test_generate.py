"""Decoding with a KV cache equals full recomputation; sampling is deterministic per seed."""

import pytest
import torch

from schemas.jobs import parse_job
from workers.context import Context
from workers.methods import generate


def run(lm, **params):
    return generate.run(lm, parse_job({"kind": "generate", "model": "tiny", "input": {"prompt": "Hello world"},
                                       "params": {"max_new_tokens": 6, "stop_at_eos": False, **params}}), Context())


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_greedy_cached_decoding_equals_full_forward(fixture, request):
    lm = request.getfixturevalue(fixture)
    res = run(lm)
    ids = lm.encode("Hello world").ids
    for tok, lp in zip(res.token_ids, res.token_logprobs):
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)
        assert tok == int(logp.argmax())
        assert lp == pytest.approx(float(logp[tok]), abs=1e-5)
        ids.append(tok)
    assert res.finish_reason == "length" and len(res.tokens) == 6


def test_sampling_is_deterministic_per_seed(tiny_llama):
    a = run(tiny_llama, temperature=1.5, seed=7)
    b = run(tiny_llama, temperature=1.5, seed=7)
    others = [run(tiny_llama, temperature=1.5, seed=s).token_ids for s in range(8, 12)]
    assert a.token_ids == b.token_ids
    assert any(o != a.token_ids for o in others)


def test_top_k_one_is_greedy(tiny_llama):
    assert run(tiny_llama, temperature=1.0, top_k=1, seed=3).token_ids == run(tiny_llama).token_ids





def test_leftover_hooks_are_removed_but_transformers_own_hooks_stay():
    from tests.tiny import tiny_llama as build
    from workers.internals.hooks import hook_count, hook_ids, remove_hooks_since

    tiny_llama = build()  # its own copy: transformers' hooks would stay on the shared fixture

    ids = torch.tensor([tiny_llama.encode("Hello world").ids])
    before = hook_ids(tiny_llama.model)
    n_hidden = len(tiny_llama.model(input_ids=ids, output_hidden_states=True).hidden_states)  # may add its own
    own = hook_count(tiny_llama.model)
    tiny_llama.layers[0].register_forward_hook(lambda m, a, o: None)  # a method that leaks a hook
    assert remove_hooks_since(tiny_llama.model, before) == 1
    assert hook_count(tiny_llama.model) == own
    assert len(tiny_llama.model(input_ids=ids, output_hidden_states=True).hidden_states) == n_hidden


@pytest.mark.parametrize("params", [{"temperature": 1e-300}, {"temperature": 1e-6, "seed": 5},
                                    {"temperature": 1.0, "top_p": 1e-300, "seed": 5},
                                    {"temperature": 1e-300, "top_p": 1e-300, "top_k": 3}])
def test_vanishing_temperature_or_top_p_decodes_greedily(tiny_llama, params):
    """Issue 10 item 4: these ended the job with "probability tensor contains inf/nan"."""
    assert run(tiny_llama, **params).token_ids == run(tiny_llama).token_ids


def test_sampling_never_overflows_at_extreme_logits():
    from workers.internals.decoding import sample_next

    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([3e38, -3e38, 1e30, 0.0, float("-inf")], dtype=torch.float32)
    for temperature in (1e-300, 1e-5, 2e-5, 1e-3, 1.0, 10.0):
        for top_p in (1e-300, 0.5, 1.0):
            assert sample_next(logits, temperature, 0, top_p, g) == 0
            assert sample_next(logits, temperature, 2, top_p, g) == 0
    # small but not greedy: a near tie is still sampled from both tokens
    near = torch.tensor([1.0, 1.0 - 1e-6, -5.0])
    picks = {sample_next(near, 1e-4, 0, 1.0, g) for _ in range(64)}
    assert picks == {0, 1}
