"""Attention weights and norms equal a straightforward per-head materialisation (LLaMA with GQA,
GPT-2, BERT); summed norms equal the materialised ‖Σ_h α f‖ to 1e-5; weighted vectors rebuild the
attention output; token-class shares; the result-size check names a selection that fits."""

from __future__ import annotations

import json

import pytest
import torch

from schemas.jobs import parse_job
from schemas.kinds.attention import AttentionParams
from schemas.limits import Limits
from tests.tiny import tiny_bert, tiny_gpt2, tiny_llama
from workers.context import Context
from workers.errors import BadInput
from workers.internals.hooks import hook_count
from workers.methods import attention
from workers.methods.attention import attention_maps, summed_norms_of, token_classes

TEXT = "When Mary and John went to the store, John gave a drink to Mary. The quick brown fox!"
ALL = ("weights", "norms", "summed_norms")
BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert}


@pytest.fixture(scope="module", params=list(BUILDERS))
def lm(request):
    return BUILDERS[request.param](seed=3)


def reference(lm, ids: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """α as the eager attention module returns it, values and W_O^h from the weights with an explicit
    `repeat_interleave` for GQA, and the (H, n, n, d) tensor of weighted vectors materialised."""
    cfg = lm.config
    H = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    kv = getattr(cfg, "num_key_value_heads", None) or H
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    hd = getattr(cfg, "head_dim", None) or d // H
    inputs: dict[int, torch.Tensor] = {}
    alphas: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(lm.layers):
        attn = block.get_submodule(lm.arch.attn)

        def grab(module, args, kwargs, i=i):
            inputs[i] = (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0])[0]

        def weights(module, args, output, i=i):
            alphas[i] = output[1][0]
        handles += [attn.register_forward_pre_hook(grab, with_kwargs=True), attn.register_forward_hook(weights)]
    before = lm.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids], device=lm.device))
    finally:
        lm.model.set_attn_implementation(before)
        for h in handles:
            h.remove()
    ref = {}
    for i, block in enumerate(lm.layers):
        x = inputs[i]  # (n, d): what the attention module reads
        if lm.arch.family == "gpt2":
            c_attn, c_proj = block.attn.c_attn, block.attn.c_proj
            v = (x @ c_attn.weight + c_attn.bias)[:, 2 * d:]  # Conv1D: (in, out)
            w_o = [c_proj.weight[h * hd:(h + 1) * hd, :] for h in range(H)]  # (hd, d)
        else:
            vp, op = block.get_submodule(lm.arch.v_proj), block.get_submodule(lm.arch.attn_out)
            v = x.float() @ vp.weight.float().T + (vp.bias.float() if vp.bias is not None else 0)
            w_o = [op.weight[:, h * hd:(h + 1) * hd].T for h in range(H)]
        v = v.reshape(len(ids), kv, hd).repeat_interleave(H // kv, dim=1)  # (n, H, hd)
        f = torch.stack([v[:, h] @ w_o[h] for h in range(H)])  # (H, n, d)
        alpha = alphas[i].float()  # (H, n, n)
        weighted = alpha[..., None] * f[:, None, :, :]  # (H, q, k, d): the paper's tensor
        ref[i] = {"weights": alpha, "norms": weighted.norm(dim=-1), "summed_norms": weighted.sum(0).norm(dim=-1),
                  "f": f, "x": x}
    return ref


def test_measures_equal_the_materialised_reference(lm):
    check_against_reference(lm, TEXT)


def check_against_reference(lm, text: str) -> None:
    ids = lm.encode(text).ids
    n_layers = len(lm.layers)
    before = lm.config._attn_implementation
    ours = attention_maps(lm, ids, list(range(n_layers)), list(range(lm.facts()["n_heads"])), ALL)
    assert lm.config._attn_implementation == before and hook_count(lm.model) == 0  # restored, none left
    ref = reference(lm, ids)
    for i in range(n_layers):
        torch.testing.assert_close(ours[i]["weights"], ref[i]["weights"], atol=1e-6, rtol=0)
        torch.testing.assert_close(ours[i]["norms"], ref[i]["norms"], atol=1e-5, rtol=1e-5)
        # 1e-5, plus float32's own resolution where norms are large (SmolLM2 reaches ~160: spacing 1.5e-5)
        torch.testing.assert_close(ours[i]["summed_norms"], ref[i]["summed_norms"], atol=1e-5, rtol=1e-6)
        assert (ours[i]["norms"] >= 0).all() and (ours[i]["summed_norms"] >= 0).all()
        torch.testing.assert_close(ours[i]["weights"].sum(-1), torch.ones(ours[i]["weights"].shape[:2]))


def test_weighted_vectors_rebuild_the_attention_output(lm):
    check_rebuild(lm, TEXT)


def check_rebuild(lm, text: str) -> None:
    """Σ_h Σ_j α_hij f_h(x_j) + b_O is the attention sublayer's output: checks f and the GQA mapping
    against the model's own forward, independently of the reference above."""
    ids = lm.encode(text).ids
    ref = reference(lm, ids)
    outputs = {}
    handles = [block.get_submodule(lm.arch.attn_out).register_forward_hook(
        lambda m, a, o, i=i: outputs.__setitem__(i, o[0])) for i, block in enumerate(lm.layers)]
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([ids], device=lm.device))
    for h in handles:
        h.remove()
    for i, block in enumerate(lm.layers):
        bias = block.get_submodule(lm.arch.attn_out).bias
        rebuilt = torch.einsum("hqk,hkd->qd", ref[i]["weights"], ref[i]["f"]) + (0 if bias is None else bias)
        # float32 sums in another order: tolerance scaled to the output (a wrong head mapping is off by O(1))
        scale = max(1.0, float(outputs[i].abs().max()))
        torch.testing.assert_close(rebuilt, outputs[i], atol=2e-5 * scale, rtol=1e-4)


def test_summed_norms_match_materialisation_on_random_tensors():
    g = torch.Generator().manual_seed(0)
    alpha = torch.softmax(torch.randn(7, 13, 13, generator=g) * 3, -1)
    f = torch.randn(7, 13, 29, generator=g) * 5
    f[:, 4] = f[0, 4]  # identical vectors and near-cancelling sums
    alpha[:, :, 4] = 1e-4
    expected = (alpha[..., None] * f[:, None]).sum(0).norm(dim=-1)
    torch.testing.assert_close(summed_norms_of(alpha, f), expected, atol=1e-5, rtol=0)


def test_head_selection_is_a_slice_of_all_heads():
    lm = tiny_llama(seed=1)
    ids = lm.encode(TEXT).ids
    every = attention_maps(lm, ids, [1], list(range(6)), ALL)[1]
    some = attention_maps(lm, ids, [1], [1, 4], ALL)[1]
    torch.testing.assert_close(some["weights"], every["weights"][[1, 4]])
    torch.testing.assert_close(some["norms"], every["norms"][[1, 4]])
    torch.testing.assert_close(some["summed_norms"], every["summed_norms"])  # always over all heads


def request(body: dict):
    return parse_job({"kind": "attention", "model": "m", **body})


def test_run_returns_the_selection_and_gqa_heads():
    lm = tiny_llama()
    res = attention.run(lm, request({"input": {"prompt": TEXT}, "params": {"layers": [-1], "heads": [5, 0],
                                                                           "measures": ["norms"]}}), Context())
    assert res.heads == [0, 5] and res.kv_heads == [0, 1]  # 6 query heads over 2 KV heads
    (layer,) = res.layers
    assert layer.layer == 2 and layer.weights is None and layer.summed_norms is None
    assert len(layer.norms) == 2 and len(layer.norms[0]) == len(res.tokens) == len(res.token_classes)


def test_token_classes_and_shares():
    lm = tiny_bert()
    enc = lm.encode(TEXT)
    classes = token_classes(lm, enc)
    assert classes[0] == classes[-1] == "special"  # [CLS], [SEP]
    assert classes[lm.token_strings(enc.ids).index(",")] == "punctuation"
    res = attention.run(lm, request({"input": {"prompt": TEXT}, "params": {"aggregate": "token_class"}}), Context())
    assert res.layers == [] and len(res.token_class) == 2
    maps = attention_maps(lm, enc.ids, [0], [0, 1, 2, 3], ALL)[0]
    special = torch.tensor([c == "special" for c in classes])
    for head in res.token_class[0].heads:
        for shares in (head.weight, head.norm):
            assert shares.special + shares.punctuation + shares.other == pytest.approx(1.0)
        assert head.weight.special == pytest.approx(float(maps["weights"][head.head][:, special].sum(-1).mean()))
        by_norm = maps["norms"][head.head]
        assert head.norm.special == pytest.approx(float((by_norm[:, special].sum(-1) / by_norm.sum(-1)).mean()))


def test_result_size_is_checked_before_running_and_names_what_fits():
    smol, limits = {"n_layers": 30, "n_heads": 9, "task": "causal_lm"}, Limits()
    cases = [({"measures": ["summed_norms"]}, ["params", "layers"]),  # ~3.8 MB a layer: 4 layers fit
             ({}, ["params", "heads"]),  # weights and norms of 9 heads: not one layer, but one head
             ({"measures": ["summed_norms"], "layers": [3, -1]}, None)]
    for params, loc in cases:
        errors = list(AttentionParams(**params).over_result_limit(512, smol, limits))
        if loc is None:
            assert not errors
            continue
        (e,) = errors
        assert e.type == "result_too_large" and e.loc == loc and "max_result_bytes" in e.msg
        fits = {k: v for k, v in e.ctx["fits"].items() if k != "aggregate"}
        assert not list(AttentionParams(**{**params, **fits}).over_result_limit(512, smol, limits))
        assert not list(AttentionParams(**params, aggregate="token_class").over_result_limit(512, smol, limits))
    (e,) = AttentionParams(measures=["summed_norms"], layers=[0, 1, 2, 3, 4, 5]).over_result_limit(512, smol, limits)
    assert e.ctx["fits"]["layers"] == [0, 1, 2, 3]
    (e,) = AttentionParams(measures=["summed_norms"]).over_result_limit(512, smol, Limits(max_result_bytes=10**6))
    assert e.loc == ["input"] and 0 < e.ctx["fits"]["max_prompt_tokens"] < 512


def test_estimate_bounds_the_real_size_and_the_worker_refuses_with_a_422():
    lm = tiny_llama()
    n = len(lm.encode(TEXT).ids)
    req = request({"input": {"prompt": TEXT}})
    real = len(json.dumps(attention.run(lm, req, Context()).model_dump(mode="json")))
    estimate = req.params.estimate_bytes(n, 3, 6, causal=True)
    assert real <= estimate <= 1.6 * real
    with pytest.raises(BadInput) as e:
        attention.run(lm, req, Context(limits=Limits(max_result_bytes=real // 2)))
    assert e.value.status == 422 and e.value.errors[0].ctx["fits"]["layers"] == [0]


def test_out_of_range_layer_is_bad_input():
    with pytest.raises(BadInput) as e:
        attention.run(tiny_bert(), request({"input": {"prompt": TEXT}, "params": {"layers": [5]}}), Context())
    assert e.value.errors[0].loc == ["params", "layers"]
