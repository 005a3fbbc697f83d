"""The logit lens: the last layer's lens is the model's own logits; each layer's norm scale is its
own; resid_mid and resid_post bracket the MLP; BERT reads through its tied input embeddings."""

from __future__ import annotations

import pytest
import torch

from schemas.jobs import parse_job
from tests.tiny import tiny_bert, tiny_gpt2, tiny_llama
from workers.context import Context
from workers.errors import BadInput
from workers.internals.capture import forward, lens_logits, residual_hooks
from workers.methods import logit_lens

TEXT = "The capital of France is Paris. The capital of Italy is"


def request(params: dict | None = None, target: str | None = " Rome"):
    inp = {"prompt": TEXT} | ({"target": target} if target else {})
    return parse_job({"kind": "logit_lens", "model": "m", "input": inp, "params": params or {}})


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_last_layer_lens_is_the_models_logits(build):
    lm = build(seed=2)
    ids = lm.encode(TEXT).ids
    res = logit_lens.run(lm, request({"top_k": 7}), Context())
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0]  # (n, V)
    probs = torch.softmax(logits, -1)
    last = res.layers[-1]
    assert last.layer == len(lm.layers) - 1 and res.positions == list(range(len(ids)))
    top = probs.topk(7, dim=-1)
    assert last.top_ids == top.indices.tolist()
    torch.testing.assert_close(torch.tensor(last.top_probs), top.values, atol=1e-6, rtol=1e-5)
    target = lm.tokenizer(" Rome", add_special_tokens=False)["input_ids"][0]
    assert res.target_id == target and res.unembedding == "lm_head"
    assert last.target_rank == (probs > probs[:, target:target + 1]).sum(-1).tolist()
    torch.testing.assert_close(torch.tensor(last.target_prob), probs[:, target], atol=1e-6, rtol=1e-5)


def test_each_layer_uses_its_own_norm_scale():
    """lm_head(γ ⊙ h / rms(h)) with h the layer's own states (TransformerLens's default reuses the
    final layer's cached scale instead)."""
    lm = tiny_llama(seed=4)
    ids = lm.encode(TEXT).ids
    store = {}
    with torch.no_grad(), residual_hooks(lm, [0], ("resid_post",), store):
        forward(lm, ids)
    h = store[("resid_post", 0)]  # (n, d)
    norm = lm.model.model.norm
    manual = lm.model.lm_head(norm.weight * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))
    torch.testing.assert_close(lens_logits(lm, h), manual, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2, tiny_bert])
def test_resid_mid_and_post_bracket_the_mlp(build):
    lm = build(seed=5)
    ids = lm.encode(TEXT).ids
    store = {}
    with torch.no_grad(), residual_hooks(lm, [0, 1], ("resid_mid", "resid_post"), store):
        forward(lm, ids)
        block = lm.layers[1]
        mid = store[("resid_mid", 1)][None]
        mlp = block.get_submodule(lm.arch.mlp)
        if lm.arch.post_norm:  # BERT: LayerNorm(mid + dense(act(...)))
            post = block.output(mlp(mid), mid)
        else:
            post = mid + mlp(block.get_submodule(lm.arch.mlp_norm)(mid))
    torch.testing.assert_close(post[0], store[("resid_post", 1)], atol=1e-5, rtol=1e-5)


def test_bert_reads_through_input_embeddings_and_positions_select():
    lm = tiny_bert()
    res = logit_lens.run(lm, request({"positions": [-1, 0, -1], "include_mid": True, "top_k": 3}, target=None),
                         Context())
    n = len(res.tokens)
    assert res.unembedding == "input_embeddings" and res.positions == [0, n - 1]
    assert [(e.layer, e.site) for e in res.layers] == [(0, "resid_mid"), (0, "resid_post"), (1, "resid_mid"),
                                                       (1, "resid_post")]
    assert all(len(e.top_tokens) == 2 and len(e.top_tokens[0]) == 3 and e.target_rank is None for e in res.layers)
    with pytest.raises(BadInput) as e:
        logit_lens.run(lm, request({"positions": [n]}), Context())
    assert e.value.errors[0].loc == ["params", "positions"]
