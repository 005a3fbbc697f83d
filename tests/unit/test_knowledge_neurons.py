"""knowledge_neurons: batched all-layer FFN IG against Captum, IG completeness, a planted fact
neuron, the adaptive sharing rule, and located vs random neurons on SmolLM2."""

from __future__ import annotations

import copy

import pytest
import torch

from schemas.jobs import KINDS
from schemas.kinds.knowledge_neurons import KnowledgeNeuronsInput, KnowledgeNeuronsParams, LocateParams
from workers.context import Context
from workers.internals.ffn import (
    clean_activations,
    ffn_integrated_gradients,
    ffn_out_modules,
    scale_deltas,
    value_deltas,
)
from workers.internals.hooks import hook_count, hooks
from workers.knowledge import neurons as knowledge
from workers.methods import knowledge_neurons as kn

PROMPT = "The capital of France is"


def Request(input, params):  # noqa: N802  (reads as the job it builds)
    """The job of the kind `params` belong to (knowledge_neurons, knowledge_edit, logit_lens)."""
    kind = next(k for k, spec in KINDS.items() if type(params) is spec.params)
    return KINDS[kind].job(kind=kind, model="tiny", input=input, params=params)


def gate_source(lm, layer: int):
    """A module whose output scales m linearly: LLaMA up_proj (m = silu(gate) ⊙ up), GPT-2 the GELU."""
    return lm.layers[layer].get_submodule("mlp.up_proj" if lm.arch.family == "llama" else "mlp.act")


def captum_ffn_ig(lm, ids: list[int], answer: int, layer: int, n_steps: int, method: str) -> torch.Tensor:
    """Captum LayerIntegratedGradients on the FFN activation (the input of mlp_out) of `layer`.

    The forward takes a gate g that scales m at the last position (baseline g=0: m = 0 there, input
    g=1: the model itself), so Captum interpolates the layer input between those two activations."""
    from captum.attr import LayerIntegratedGradients

    def forward(gate: torch.Tensor) -> torch.Tensor:  # gate (batch,)
        def scale(module, args, out):
            out = out.clone()
            out[:, -1] = out[:, -1] * gate[:, None]
            return out
        with hooks(forward=[(gate_source(lm, layer), scale)]):
            logits = lm.model(input_ids=torch.tensor([ids] * gate.shape[0])).logits[:, -1]
        return logits.softmax(-1)[:, answer]

    lig = LayerIntegratedGradients(forward, ffn_out_modules(lm)[layer])
    attr = lig.attribute(torch.ones(1), baselines=torch.zeros(1), n_steps=n_steps, method=method,
                         attribute_to_layer_input=True)  # (1, L, inter)
    assert attr[0, :-1].abs().max() == 0  # only the last position moves
    return attr[0, -1]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left"])
def test_ffn_ig_equals_captum_layer_ig(family, rule, request):
    lm = request.getfixturevalue(family)
    ids = lm.tokenizer(PROMPT)["input_ids"]
    answer = 300
    ours = ffn_integrated_gradients(lm, ids[:-1], ids[-1], answer, n_steps=12, rule=rule, rows=7)  # several batches
    for layer in range(len(lm.layers)):
        ref = captum_ffn_ig(lm, ids, answer, layer, 12, rule)
        assert torch.allclose(ours[layer], ref, rtol=1e-4, atol=1e-6 * ref.abs().max())


def test_ffn_ig_layer_subset_and_completeness(tiny_llama):
    """Σ_i IG(m_i^l) = P(model) − P(layer l's activation zeroed at the last position) (Sundararajan et al. 2017)."""
    lm = tiny_llama
    ids = lm.tokenizer(PROMPT)["input_ids"]
    answer = 300
    ig = ffn_integrated_gradients(lm, ids[:-1], ids[-1], answer, n_steps=48, layers=[1])
    assert ig[0].abs().max() == 0 and ig[2].abs().max() == 0
    _, probs = clean_activations(lm, ids[:-1], ids[-1])
    zero = scale_deltas(lm, [(1, i) for i in range(ig.shape[1])], 0.0)
    p_zero = kn.answer_prob(lm, ids, [answer], zero)
    assert float(ig[1].sum()) == pytest.approx(float(probs[answer]) - p_zero, rel=1e-3)


def plant_fact_neuron(lm, prompt: str, answer_id: int, layer: int, index: int, pre: float = 3.0, out: float = 30.0,
                      avoid: tuple[str, ...] = (), also: tuple[str, ...] = (), boost: float = 20.0):
    """A copy of `lm` whose neuron (layer, index) fires on the last position of `prompt` and of the `also`
    prompts (m ≈ silu(3)·3), not on the last position of the `avoid` prompts (its key is the least-norm
    solution of key · h = 1 there, 0 here), and writes the answer's unembedding direction; the answer's
    unembedding row is scaled up by `boost` so the fact can win the softmax (a random tiny model's logits
    are all near 0)."""
    lm = copy.copy(lm)
    lm.model = copy.deepcopy(lm.model)
    block = lm.layers[layer]

    def normed_residual(text: str) -> torch.Tensor:
        seen = {}
        with hooks(pre=[(block.mlp.gate_proj, lambda m, a: seen.__setitem__("h", a[0][0, -1]))]):
            lm.model(input_ids=torch.tensor([lm.tokenizer(text)["input_ids"]]))
        return seen["h"]  # (hidden,): what the FFN reads

    with torch.no_grad():
        fire, quiet = (prompt, *also), avoid
        h = torch.stack([normed_residual(t) for t in fire + quiet])  # (k, hidden)
        target = torch.tensor([1.0] * len(fire) + [0.0] * len(quiet))  # (k,)
        key = torch.linalg.pinv(h) @ target  # (hidden,)
        block.mlp.gate_proj.weight[index] = pre * key
        block.mlp.up_proj.weight[index] = pre * key
        lm.model.lm_head.weight[answer_id] *= boost
        u = lm.model.lm_head.weight[answer_id]
        block.mlp.down_proj.weight[:, index] = out * u / u.norm()
    return lm


CONTROL = "Two plus two is"


@pytest.fixture(scope="module")
def planted(tiny_llama):
    (answer_id,) = tiny_llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    return plant_fact_neuron(tiny_llama, PROMPT, answer_id, layer=1, index=17, avoid=(CONTROL,)), answer_id


def test_planted_fact_neuron_is_located(planted, tiny_llama):
    lm, answer_id = planted
    req = Request(KnowledgeNeuronsInput(prompts=[PROMPT], answer=" Mary", control_prompts=[CONTROL]),
                  KnowledgeNeuronsParams(n_steps=16))
    res = kn.run(lm, req, Context())
    top = res.neurons[0]
    assert (top.layer, top.index) == (1, 17) and top.shared_by == 1.0
    effect = res.prompts[0]
    assert effect.prob > 0.5  # the planted fact is known
    assert effect.suppressed < 0.5 * effect.prob < effect.enhanced
    assert effect.random_suppressed == pytest.approx(effect.prob, rel=0.2)
    assert res.summary["suppressed"] < res.summary["random_suppressed"]
    assert hook_count(lm.model) == 0 and hook_count(tiny_llama.model) == 0


def test_control_filter_drops_a_shared_neuron_and_keeps_the_fact_neuron(tiny_llama):
    """A fact neuron (1, 17) fires on the fact only; a shared "relation" neuron (1, 40) fires on the fact
    and on the control, and writes the same answer there. The filter keeps the first and drops the second
    (reported with the control it is coarse on); without it both are located, and suppressing them wipes
    out the control's prediction too."""
    (answer_id,) = tiny_llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    lm = plant_fact_neuron(tiny_llama, PROMPT, answer_id, layer=1, index=17, out=2.0, avoid=(CONTROL,))
    lm = plant_fact_neuron(lm, PROMPT, answer_id, layer=1, index=40, out=2.0, also=(CONTROL,), boost=1.0)
    assert lm.token_strings([kn.next_token(lm, lm.encode(CONTROL).ids)]) == [" Mary"]
    inp = KnowledgeNeuronsInput(prompts=[PROMPT], answer=" Mary", control_prompts=[CONTROL])
    on = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=16)), Context())  # the default
    off = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=16, filter_controls=False)), Context())
    pairs = lambda ns: {(n.layer, n.index) for n in ns}  # noqa: E731
    assert {(1, 17), (1, 40)} <= pairs(off.neurons) and off.filtered_neurons is None
    assert (1, 17) in pairs(on.neurons) and (1, 40) not in pairs(on.neurons)
    assert [(n.layer, n.index, n.controls) for n in on.filtered_neurons] == [(1, 40, [0])]
    assert on.filtered_count == 1 and on.filtered_neurons[0].shared_by == 1.0
    assert off.summary["control_suppressed"] < -0.9 and abs(on.summary["control_suppressed"]) < 0.01
    # knowledge_edit locates inline with its control prompts the same way
    from schemas.kinds.knowledge_edit import KnowledgeEditInput, KnowledgeEditParams
    from workers.methods import knowledge_edit as ke

    class Store:
        def put(self, kind, model, data):
            return type("View", (), {"id": "ed_" + "0" * 32})()

    edit = ke.run(lm, Request(KnowledgeEditInput(prompts=[PROMPT], answer=" Mary", control_prompts=[CONTROL]),
                              KnowledgeEditParams(operation="suppress", n_steps=16)), Context(store=Store()))
    assert (1, 17) in pairs(edit.neurons) and (1, 40) not in pairs(edit.neurons)
    assert pairs(edit.filtered_neurons) == {(1, 40)} and edit.locality.score == 1.0
    assert hook_count(lm.model) == 0


def test_builtin_controls_filter_by_default_and_are_cached(tiny_llama, monkeypatch):
    """With no control_prompts the built-in control facts filter (issue 10 item 2: the default neurons must be
    specific): a neuron shared by the fact and one built-in control is dropped, the fact's own neuron is kept,
    and the result says which controls were used. `builtin_controls: false` gives the unfiltered set. The
    controls' IG runs once per model and IG settings: a second job only attributes the fact's prompts."""
    from workers.knowledge.control_facts import CONTROL_PROMPTS

    (answer_id,) = tiny_llama.tokenizer(" Mary", add_special_tokens=False)["input_ids"]
    lm = plant_fact_neuron(tiny_llama, PROMPT, answer_id, layer=1, index=17, out=2.0, avoid=CONTROL_PROMPTS)
    lm = plant_fact_neuron(lm, PROMPT, answer_id, layer=1, index=40, out=2.0, also=CONTROL_PROMPTS[:1],
                           avoid=CONTROL_PROMPTS[1:], boost=1.0)
    assert lm.token_strings([kn.next_token(lm, lm.encode(CONTROL_PROMPTS[0]).ids)]) == [" Mary"]
    calls = []
    real = knowledge.fact_attributions
    monkeypatch.setattr(knowledge, "fact_attributions", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    inp = KnowledgeNeuronsInput(prompts=[PROMPT], answer=" Mary")
    on = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=8)), Context())  # the default
    assert len(calls) == 1 + len(CONTROL_PROMPTS)
    pairs = lambda ns: {(n.layer, n.index) for n in ns}  # noqa: E731
    assert on.control_set == "builtin" and [c.prompt for c in on.controls] == list(CONTROL_PROMPTS)
    assert (1, 17) in pairs(on.neurons) and (1, 40) not in pairs(on.neurons)
    assert [(n.layer, n.index, n.controls) for n in on.filtered_neurons if n.index == 40] == [(1, 40, [0])]
    assert abs(on.controls[0].suppressed / on.controls[0].prob - 1) < 0.01  # the shared fact is left alone

    calls.clear()
    again = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=8)), Context())
    assert len(calls) == 1 and again.neurons == on.neurons and again.filtered_neurons == on.filtered_neurons
    calls.clear()
    kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=4)), Context())  # other IG settings: computed anew
    assert len(calls) == 1 + len(CONTROL_PROMPTS)
    calls.clear()
    kn.run(tiny_llama, Request(inp, KnowledgeNeuronsParams(n_steps=8)), Context())  # another model: its own
    assert len(calls) == 1 + len(CONTROL_PROMPTS)

    calls.clear()
    off = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=8, builtin_controls=False)), Context())
    assert len(calls) == 1 and off.control_set is None and off.controls == [] and off.filtered_neurons is None
    assert {(1, 17), (1, 40)} <= pairs(off.neurons)
    unfiltered = kn.run(lm, Request(inp, KnowledgeNeuronsParams(n_steps=8, filter_controls=False)), Context())
    assert unfiltered.control_set is None and pairs(unfiltered.neurons) == pairs(off.neurons)
    given = kn.run(lm, Request(KnowledgeNeuronsInput(prompts=[PROMPT], answer=" Mary", control_prompts=[CONTROL]),
                               KnowledgeNeuronsParams(n_steps=8)), Context())
    assert given.control_set == "input" and [c.prompt for c in given.controls] == [CONTROL]
    assert hook_count(lm.model) == 0


def test_refine_filters_controls_before_the_adaptive_ratio():
    scores = torch.zeros(2, 1, 10)  # (prompts, layers, neurons)
    scores[:, 0, :6] = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])  # 6 candidates on both prompts
    scores[0, 0, 6] = 0.5  # on one prompt only
    contrast = torch.zeros(4, 1, 10)  # (controls, layers, neurons)
    contrast[:, 0, 9] = 1.0  # each control's own peak
    contrast[0, 0, 0] = 0.5  # neuron 0: matters for one control of 4
    contrast[:2, 0, 1] = 0.5  # neuron 1: for two
    contrast[0, 0, 3] = 0.15  # neuron 3: for one, over 0.1 × max but under 0.2
    contrast[:, 0, 2] = 0.05  # neuron 2: under 0.1 × max everywhere
    plain = knowledge.refine(scores, LocateParams(target_count=(2, 6)))
    assert len(plain.neurons) == 6 and plain.filtered is None
    default = knowledge.refine(scores, LocateParams(target_count=(2, 6)), contrast)  # 0.1 × max, any one control
    assert [n.index for n in default.neurons] == [2, 4, 5]
    assert [(n.index, n.controls) for n in default.filtered] == [(0, [0]), (1, [0, 1]), (3, [0])]
    assert default.filtered_count == 3
    loose = knowledge.refine(scores, LocateParams(target_count=(2, 6), contrast_threshold=0.2), contrast)
    assert [n.index for n in loose.neurons] == [2, 3, 4, 5]
    half = knowledge.refine(scores, LocateParams(target_count=(2, 6), contrast_ratio=0.5), contrast)
    assert [n.index for n in half.neurons] == [0, 2, 3, 4, 5] and half.filtered_count == 1
    # filtered first, then the adaptive ratio: with 4 left below the target [5, 6] it steps down to 0.5,
    # where the one-prompt neuron 6 joins
    down = knowledge.refine(scores, LocateParams(target_count=(5, 6), contrast_threshold=0.2), contrast)
    assert {n.index for n in down.neurons} == {2, 3, 4, 5, 6} and down.sharing_ratio == pytest.approx(0.5)
    for bad in ({"contrast_ratio": 0.0}, {"contrast_threshold": 1.5}, {"filter_control": True}):  # misspelt: refused
        with pytest.raises(ValueError):
            LocateParams(**bad)


def test_refine_thresholds_and_adaptive_sharing():
    scores = torch.zeros(4, 2, 10)  # (prompts, layers, neurons)
    scores[:, 0, 0] = 1.0  # the peak of every prompt
    scores[:3, 1, 3] = 0.5  # on 3 of 4 prompts
    scores[:2, 1, 5] = 0.5  # on 2 of 4
    scores[:, 0, 7] = 0.1  # under 0.2 × max everywhere
    fixed = knowledge.refine(scores, LocateParams(sharing_ratio=0.5))
    assert {(n.layer, n.index) for n in fixed.neurons} == {(0, 0), (1, 3), (1, 5)}
    assert fixed.coarse_counts == [3, 3, 2, 1]
    # adaptive, target [1, 2]: 0.7 keeps 2 (shares 1.0 and 0.75) -> in range
    adaptive = knowledge.refine(scores, LocateParams(target_count=(1, 2)))
    assert [(n.layer, n.index) for n in adaptive.neurons] == [(0, 0), (1, 3)] and adaptive.sharing_ratio == 0.7
    # adaptive, target [3, 5]: steps down to 0.5, where the 2-of-4 neuron joins
    down = knowledge.refine(scores, LocateParams(target_count=(3, 5)))
    assert len(down.neurons) == 3 and down.sharing_ratio == pytest.approx(0.5)
    assert down.neurons[0].score == 1.0  # sorted by mean score


def test_value_deltas_limit_positions(tiny_llama):
    lm = tiny_llama
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    base = lm.model(input_ids=ids).logits
    with value_deltas(lm, scale_deltas(lm, [(0, 1), (2, 5)], 0.0), positions=[ids.shape[1] - 1]):
        out = lm.model(input_ids=ids).logits
    assert torch.equal(out[:, :-1], base[:, :-1]) and not torch.allclose(out[:, -1], base[:, -1])
