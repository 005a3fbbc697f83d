"""The IOI circuit pipeline on a tiny LLaMA with a planted circuit: every head's output projection
is zeroed but two (L0H4, L1H2) and the MLPs write nothing, so only those heads can carry the
answer. The pipeline must find no effect anywhere else, class only planted heads, and measure the
planted circuit as fully faithful under every ablation."""

from __future__ import annotations

import copy

import pytest
import torch

from schemas.jobs import JOB_MODELS
from workers.context import Context
from workers.internals.hooks import hook_count
from workers.methods import circuit

PLANTED = {(0, 4), (1, 2)}
PAIRS = [  # names that are single tokens of the tiny tokenizer; ABC-style corruption
    {"clean_prompt": "When Mary and John went to the store, John gave a drink to",
     "corrupted_prompt": "When John and Mary went to the store, Mary gave a drink to",
     "answer": " Mary", "wrong_answer": " John", "positions": {"io": 2, "s1": 5, "s2": 15, "end": 21}},
    {"clean_prompt": "When John and Mary went to the store, Mary gave a drink to",
     "corrupted_prompt": "When Mary and John went to the store, John gave a drink to",
     "answer": " John", "wrong_answer": " Mary", "positions": {"io": 2, "s1": 5, "s2": 15, "end": 21}},
]


@pytest.fixture(scope="module")
def planted(tiny_llama):
    lm = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        for i, block in enumerate(lm.layers):
            w = block.self_attn.o_proj.weight  # (d, H * head_dim)
            keep = torch.zeros(6, dtype=torch.bool)
            keep[[h for layer, h in PLANTED if layer == i]] = True
            w.mul_(keep.repeat_interleave(12).to(w.dtype))
            w.mul_(4.0)  # a clear logit difference
            block.mlp.down_proj.weight.zero_()
    return lm


def positions_of(lm, pair):
    ids = lm.encode(pair["clean_prompt"]).ids
    tokens = lm.token_strings(ids)
    names = [i for i, t in enumerate(tokens) if t in (" Mary", " John")]
    io = next(i for i in names if tokens[i] == pair["answer"])
    s1, s2 = [i for i in names if tokens[i] == pair["wrong_answer"]]
    return {"io": io, "s1": s1, "s2": s2, "end": len(ids) - 1}


def test_the_pipeline_finds_only_the_planted_heads(planted):
    pairs = [{**p, "positions": positions_of(planted, p)} for p in PAIRS]
    job = JOB_MODELS["circuit"](kind="circuit", model="tiny", input={"pairs": pairs},
                                params={"threshold": 0.001, "ablation": "mean"})
    res = circuit.run(planted, job, Context())
    direct = torch.tensor(res.direct_effects)  # (L, H)
    for layer in range(direct.shape[0]):
        for h in range(direct.shape[1]):
            if (layer, h) not in PLANTED:
                assert abs(direct[layer, h]) < 1e-5, (layer, h)  # float noise of batched rows
    assert abs(direct[1, 2]) > 1e-3  # the last layer's planted head carries the answer directly
    classed = {(h.layer, h.head) for h in res.heads}
    assert classed and classed <= PLANTED
    # nothing outside the planted heads carries anything
    assert res.faithfulness.with_negative == pytest.approx(1.0, abs=1e-5)
    carrying = {(h.layer, h.head) for h in res.heads if h.role != "negative_name_mover"}
    assert res.faithfulness.n_heads == len(carrying)
    assert {n.id for n in res.graph.nodes} >= {f"L{l}H{h}" for l, h in classed} | {"logits"}
    assert res.forwards > 0 and res.positions_computed < res.positions_naive
    assert hook_count(planted.model) == 0


@pytest.mark.parametrize("ablation", ["zero", "resample"])
def test_faithfulness_of_the_planted_circuit_holds_under_every_ablation(planted, ablation):
    pairs = [{**p, "positions": positions_of(planted, p)} for p in PAIRS]
    job = JOB_MODELS["circuit"](kind="circuit", model="tiny", input={"pairs": pairs},
                                params={"threshold": 0.001, "ablation": ablation})
    res = circuit.run(planted, job, Context())
    assert res.faithfulness.ablation == ablation
    assert res.faithfulness.with_negative == pytest.approx(1.0, abs=1e-5)
