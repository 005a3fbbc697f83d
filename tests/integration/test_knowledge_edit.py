"""knowledge_edit: value-vector deltas equal the weight edit, edit sets stored in (real) Redis and
applied per job by hooks, shared weights bit-identical after every job and after an exception."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from redis import Redis

from common.artifacts import ArtifactStore
from schemas.kinds.generate import GenerateParams
from schemas.kinds.knowledge_edit import KnowledgeEditInput, KnowledgeEditParams
from schemas.kinds.knowledge_neurons import Neuron
from tests.unit.test_knowledge_neurons import PROMPT, Request, plant_fact_neuron
from workers.context import Context
from workers.errors import BadInput
from workers.internals.decoding import decode
from workers.internals.ffn import ValueDelta, ffn_out_modules, value_deltas
from workers.internals.hooks import hook_count
from workers.interventions.applied import applied
from workers.methods import knowledge_edit as ke


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# the planted value vector is 30·û_Mary and ‖u_Mary‖ ≈ 2.8: λ = 15 takes it past zero
LAM = 15.0
CONTROLS = ("Two plus two is",)


@pytest.fixture(scope="module")
def store(redis_url):
    return ArtifactStore(Redis.from_url(redis_url), "tenant-a")


@pytest.fixture(scope="module")
def planted(tiny_llama):
    """The planted fact ("... is Mary") with the new answer " capital" made reachable: its unembedding
    row is scaled like the planted answer's (a random tiny model's logits are all near 0)."""
    (answer_id,) = tiny_llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    (new_id,) = tiny_llama.tokenizer(" capital", add_special_tokens=False)["input_ids"]
    (control_id,) = tiny_llama.tokenizer(" is", add_special_tokens=False)["input_ids"]
    lm = plant_fact_neuron(tiny_llama, PROMPT, answer_id, layer=1, index=17, avoid=CONTROLS)
    # the control is a confident fact of its own (a near-uniform prediction flips on any nudge)
    lm = plant_fact_neuron(lm, CONTROLS[0], control_id, layer=0, index=29, avoid=(PROMPT,))
    with torch.no_grad():
        lm.model.lm_head.weight[new_id] *= 20.0
    return lm, answer_id


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
def test_value_deltas_equal_the_weight_edit(family, request):
    lm = request.getfixturevalue(family)
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    hidden = lm.facts()["hidden_size"]
    torch.manual_seed(1)
    deltas = [ValueDelta(0, [3, 9], torch.randn(2, hidden)), ValueDelta(1, [4], torch.randn(1, hidden))]
    edited = copy.deepcopy(lm.model)
    with torch.no_grad():
        for d in deltas:
            mod = edited.get_submodule(f"{lm.arch.layers}.{d.layer}.{lm.arch.mlp_out}")
            for i, row in zip(d.index, d.delta):
                if isinstance(mod, torch.nn.Linear):
                    mod.weight[:, i] += row  # (hidden, inter)
                else:
                    mod.weight[i] += row  # GPT-2 Conv1D (inter, hidden)
    before = checksum(lm.model)
    with value_deltas(lm, deltas):
        ours = lm.model(input_ids=ids).logits
    ref = edited(input_ids=ids).logits
    assert torch.allclose(ours, ref, atol=1e-5)
    assert checksum(lm.model) == before and hook_count(lm.model) == 0


def test_erase_and_update_on_a_planted_fact(planted, store):
    lm, answer_id = planted
    inp = dict(prompts=[PROMPT], answer=" Mary", control_prompts=list(CONTROLS))
    erase = ke.run(lm, Request(KnowledgeEditInput(**inp), KnowledgeEditParams(operation="erase", n_steps=8,
                                                                             lam=LAM)), Context(store=store))
    assert erase.located and (erase.neurons[0].layer, erase.neurons[0].index) == (1, 17)
    assert erase.reliability.prob_before > 0.5 > erase.reliability.prob_after
    assert erase.reliability.score == 1.0  # " Mary" is no longer top-1
    assert erase.locality.prompts[0].prob_before > 0.5
    assert erase.locality.score == 1.0
    update = ke.run(lm, Request(KnowledgeEditInput(**inp, new_answer=" capital", neurons=[Neuron(layer=1, index=17)]),
                                KnowledgeEditParams(operation="update", lam=LAM)), Context(store=store))
    assert not update.located and update.reliability.score == 1.0  # " capital" is top-1 now
    assert update.reliability.new_prob_after > 0.5 > update.reliability.new_prob_before
    view = store.get("edits", update.edit_id, lm.id)
    assert view.data["operation"] == "update" and view.data["deltas"][0]["layer"] == 1
    assert len(view.data["deltas"][0]["delta"]) == lm.facts()["hidden_size"]


def test_edits_apply_for_one_job_only_and_never_touch_weights(planted, store):
    lm, answer_id = planted
    res = ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary", new_answer=" capital",
                                                neurons=[Neuron(layer=1, index=17)]),
                             KnowledgeEditParams(operation="update", lam=LAM)), Context(store=store))
    ids = lm.encode(PROMPT).ids
    before = checksum(lm.model)
    plain = decode(lm, ids, 3)
    with applied(lm, GenerateParams(edits=[res.edit_id]), store):
        edited = decode(lm, ids, 3)
        assert hook_count(lm.model) == 1
    assert checksum(lm.model) == before and hook_count(lm.model) == 0
    assert plain.ids[0] == answer_id and edited.ids[0] != answer_id
    assert lm.tokenizer.decode(edited.ids[:1]) == " capital"
    assert decode(lm, ids, 3).ids == plain.ids  # the next job is unedited
    with pytest.raises(RuntimeError, match="inside"):
        with applied(lm, GenerateParams(edits=[res.edit_id]), store):
            decode(lm, ids, 2)
            raise RuntimeError("a failure inside the job")
    assert checksum(lm.model) == before and hook_count(lm.model) == 0


def test_foreign_missing_and_other_model_edits_are_bad_input(planted, store, redis_url, tiny_gpt2):
    lm, _ = planted
    res = ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary", neurons=[Neuron(layer=1, index=17)]),
                             KnowledgeEditParams(operation="suppress")), Context(store=store))
    other = ArtifactStore(Redis.from_url(redis_url), "tenant-b")
    for s, model, msg in [(other, lm, "no edits artifact"), (store, tiny_gpt2, "was made for model")]:
        with pytest.raises(BadInput, match=msg):
            with applied(model, GenerateParams(edits=[res.edit_id]), s):
                pass
        assert hook_count(model.model) == 0
    with pytest.raises(BadInput, match="no edits artifact"):
        with applied(lm, GenerateParams(edits=["ed_" + "0" * 32]), store):
            pass


def test_bad_requests(planted, store):
    lm, _ = planted
    with pytest.raises(BadInput, match="new_answer"):
        ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary"), KnowledgeEditParams(operation="update")),
               Context(store=store))
    n_layers = len(ffn_out_modules(lm))
    with pytest.raises(BadInput, match="neurons"):
        ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary", neurons=[Neuron(layer=n_layers, index=0)]),
                           KnowledgeEditParams(operation="erase")), Context(store=store))
    with pytest.raises(ValueError, match="lambda applies"):
        KnowledgeEditParams(operation="suppress", lam=1.0)
    with pytest.raises(ValueError):
        GenerateParams(edits=["not-an-id"])
    with pytest.raises(ValueError):
        GenerateParams(edits=["ed_" + "0" * 32] * 17)


def test_edits_apply_to_logit_lens(planted, store):
    from schemas.kinds.logit_lens import LogitLensInput, LogitLensParams
    from workers.methods import logit_lens

    lm, _ = planted
    res = ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary", neurons=[Neuron(layer=1, index=17)]),
                             KnowledgeEditParams(operation="erase", lam=LAM)), Context(store=store))
    before = checksum(lm.model)
    inp = LogitLensInput(prompt=PROMPT, target=" Mary")
    plain = logit_lens.run(lm, Request(inp, LogitLensParams(positions=[-1])), Context(store=store))
    edited = logit_lens.run(lm, Request(inp, LogitLensParams(positions=[-1], edits=[res.edit_id])), Context(store=store))
    p0 = [layer.target_prob[0] for layer in plain.layers]
    p1 = [layer.target_prob[0] for layer in edited.layers]
    assert p1[0] == pytest.approx(p0[0])  # layer 0 comes before the edited layer 1
    assert p0[-1] > 0.5 > p1[-1]
    assert checksum(lm.model) == before and hook_count(lm.model) == 0
