"""FFN sub-updates: coefficients equal the activation computed from the block's own weights,
Σ m_i v_i (+ b) rebuilds the MLP output, scores and vocabulary projections are what they claim."""

from __future__ import annotations

import pytest
import torch

from schemas.jobs import parse_job
from tests.tiny import tiny_bert, tiny_gpt2, tiny_llama
from workers.context import Context
from workers.internals.capture import forward, in_out_weight, residual_hooks
from workers.internals.hooks import capture_outputs
from workers.methods import ffn_projection

TEXT = "When Mary and John went to the store, John gave a drink to"


def request(params: dict):
    return parse_job({"kind": "ffn_projection", "model": "m", "input": {"prompt": TEXT}, "params": params})


def activation(lm, block, x: torch.Tensor) -> torch.Tensor:
    """m from the FFN's input x, written out per family from the weights."""
    if lm.arch.family == "llama":
        mlp = block.mlp
        return torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    if lm.arch.family == "gpt2":
        return block.mlp.act(x @ block.mlp.c_fc.weight + block.mlp.c_fc.bias)
    return torch.nn.functional.gelu(x @ block.intermediate.dense.weight.T + block.intermediate.dense.bias)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_bert])
def test_sub_updates_rebuild_the_mlp_output(build):
    check_sub_updates(build(seed=6))


def check_sub_updates(lm) -> None:
    ids = lm.encode(TEXT).ids
    pos = len(ids) - 2
    res = ffn_projection.run(lm, request({"position": -2, "top_values": 5, "top_tokens": 4,
                                          "include_coefficients": True, "include_value_vectors": True}), Context())
    assert res.position == pos and res.n_values == in_out_weight(lm.layers[0].get_submodule(lm.arch.mlp_out)).shape[0]
    outs = {str(i): b.get_submodule(lm.arch.mlp_out) for i, b in enumerate(lm.layers)}
    store = {}
    with torch.no_grad(), capture_outputs(outs) as mlp_out, residual_hooks(lm, range(len(lm.layers)), ("resid_mid",),
                                                                           store, [pos]):
        forward(lm, ids)
    for layer, block in zip(res.layers, lm.layers):
        out_proj = block.get_submodule(lm.arch.mlp_out)
        w = in_out_weight(out_proj)  # (F, d)
        m = torch.tensor(layer.coefficients)
        x = store[("resid_mid", layer.layer)][0]
        if not lm.arch.post_norm:
            x = block.get_submodule(lm.arch.mlp_norm)(x)
        with torch.no_grad():
            torch.testing.assert_close(m, activation(lm, block, x), atol=1e-5, rtol=1e-4)
        bias = 0 if out_proj.bias is None else out_proj.bias
        torch.testing.assert_close(m @ w + bias, mlp_out[str(layer.layer)][0, pos], atol=1e-5, rtol=1e-4)
        assert layer.update_norm == pytest.approx(float((m @ w).norm()), rel=1e-5)
        scores = m.abs() * w.norm(dim=-1)
        assert [s.index for s in layer.sub_updates] == scores.topk(5).indices.tolist()
        for s in layer.sub_updates:
            assert s.score == pytest.approx(abs(s.coefficient) * s.value_norm, rel=1e-5)
            torch.testing.assert_close(torch.tensor(s.value_vector), w[s.index])
        assert all(p.delta >= q.delta for p in layer.promoted for q in layer.suppressed)
        assert all(p.delta == pytest.approx(p.logprob_after - p.logprob_before, abs=1e-5) for p in layer.promoted)


def test_value_projection_goes_through_the_final_norm_weight():
    lm = tiny_llama(seed=7)
    res = ffn_projection.run(lm, request({"layers": [1], "top_values": 3, "top_tokens": 5}), Context())
    w = in_out_weight(lm.layers[1].mlp.down_proj)
    for s in res.layers[0].sub_updates:
        direction = (1 if s.coefficient >= 0 else -1) * w[s.index]
        logits = lm.model.lm_head.weight @ (lm.model.model.norm.weight * direction)
        assert [t.id for t in s.top_tokens] == logits.topk(5).indices.tolist()
    assert "γ" in res.projection and "lm_head" in res.projection
