"""`icl_anchors` (Wang et al. 2023) on tiny models, each against an independent computation:

- the flows are the means the paper defines, recomputed pair by pair from the saliency maps;
- the saliency A ⊙ ∂L/∂A (summed over heads) equals central finite differences of the loss in a
  scaling of that attention entry (float64 tiny GPT-2), and ∂L/∂β of the re-weighting equals finite
  differences in β;
- on a GPT-2 built by hand so that the target can read the answer only through the label words,
  S_pq dominates the deep layers; built so that it reads the answer from a text token instead, it does not;
- the shared-prefix batches equal full forwards (plain and re-weighted), the target's attention on the
  label words equals HF's own `output_attentions`, the AUC equals a rank (Mann-Whitney) computation;
- re-weighting persists nothing: weights bit-identical, no hook, the attention implementation restored,
  β = 0 is the plain model. (A job storing β, and the `anchors` intervention reading it back, need the
  artifact store in Redis: tests/integration/test_icl_anchors.py.)
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from schemas.facts import Facts
from schemas.jobs import parse_job
from schemas.limits import Limits
from schemas.models import ModelSpec
from tests.tiny import tiny_gpt2 as make_tiny_gpt2
from tests.tiny import tiny_llama as make_tiny_llama
from tests.tiny import tokenizer
from workers.anchors.core import (
    PrefixRunner,
    auc_per_layer,
    cumulative_share,
    fit_beta,
    flow_means,
    label_logits,
    saliency,
    target_attention,
)
from workers.anchors.prompts import marked_prompt, query_prompt, task_of
from workers.errors import BadInput
from workers.internals.hooks import hook_count
from workers.interventions.anchors import _session, anchored, find_positions, reweight_edit
from workers.models.loading import wrap

WORDS = {"pos": "Mary", "neg": "John"}  # single tokens of the tiny tokenizer (" Mary", " John")
DEMOS = [{"text": "the store was great", "label": "pos"}, {"text": "the dog was lazy", "label": "neg"},
         {"text": "a quick brown fox", "label": "pos"}, {"text": "two plus two is five", "label": "neg"}]
QUERIES = [{"text": "hello world", "label": "pos"}, {"text": "the capital of Italy", "label": "neg"},
           {"text": "Paris is fine", "label": "pos"}, {"text": "three plus three", "label": "neg"},
           {"text": "this is a tiny test", "label": "pos"}, {"text": "the lazy fox", "label": "neg"}]


def job(lm, **input_and_params):
    params = input_and_params.pop("params", {})
    inp = {"label_words": WORDS, "demonstrations": DEMOS, "queries": QUERIES, **input_and_params}
    return parse_job({"kind": "icl_anchors", "model": lm.id, "input": inp, "params": params})


def prompts_of(lm, req):
    task = task_of(lm, req.input)
    return task, [query_prompt(lm, req.input, task, req.input.demonstrations, q, ["input", "queries", i], Limits())
                  for i, q in enumerate(req.input.all_queries)]


def loss_of(z: torch.Tensor, y: int) -> torch.Tensor:
    return F.cross_entropy(z[None].double(), torch.tensor([y]))


@pytest.fixture(scope="module")
def gpt2_64():
    """A float64 tiny GPT-2 (LLaMA's RMSNorm computes in float32 whatever the dtype: finite differences
    need every op in float64)."""
    lm = make_tiny_gpt2(seed=3, layers=3)
    lm.model.double()
    return wrap(lm.spec, lm.model, lm.tokenizer)


# -- prompts ---------------------------------------------------------------------------------------
def test_the_label_positions_hold_the_label_words_and_the_target_ends_the_slot(tiny_llama):
    task, prompts = prompts_of(tiny_llama, job(tiny_llama))
    toks = tiny_llama.token_strings(prompts[0].ids)
    assert [toks[p] for p in prompts[0].label_positions] == [" Mary", " John", " Mary", " John"]
    assert prompts[0].label_classes == [0, 1, 0, 1] and task.labels == ["pos", "neg"]
    assert task.label_ids == [prompts[0].ids[p] for p in prompts[0].label_positions[:2]]
    text = tiny_llama.tokenizer.decode(prompts[0].ids, skip_special_tokens=True)
    assert text.endswith("Review: hello world\nSentiment:")  # the slot's space moved into the label word
    assert prompts[0].gold == 0 and prompts[1].gold == 1


def test_a_marked_prompt_is_the_same_prompt_as_the_template_writes(tiny_llama):
    req = job(tiny_llama, queries=QUERIES[:1])
    _, (expected,) = prompts_of(tiny_llama, req)
    marked = "".join(f"Review: {d['text']}\nSentiment: [[{WORDS[d['label']]}]]\n" for d in DEMOS)
    marked += f"Review: {QUERIES[0]['text']}\nSentiment:"
    mreq = parse_job({"kind": "icl_anchors", "model": "m", "input": {"label_words": WORDS, "prompt": marked,
                                                                   "prompt_label": "pos"}})
    got = marked_prompt(tiny_llama, mreq.input, task_of(tiny_llama, mreq.input), Limits())
    assert (got.ids, got.label_positions, got.label_classes, got.gold) == (
        expected.ids, expected.label_positions, expected.label_classes, expected.gold)


def test_label_words_with_one_first_token_are_refused(tiny_llama):
    req = job(tiny_llama, label_words={"pos": "positive", "neg": "negative"})  # both start with " "
    with pytest.raises(BadInput, match="different tokens"):
        task_of(tiny_llama, req.input)


@pytest.mark.parametrize("bad, match", [
    ({"demonstrations": [{"text": "x", "label": "other"}]}, "not a key"),
    ({"template": "Sentiment: {label} {text}\n"}, "then `{label}`"),
    ({"query": {"text": "x"}}, "exactly one of `query` or `queries`"),
    ({"fit_examples": [{"text": "x", "label": "pos"}], "queries": [{"text": "y"}]}, "needs its `label`"),
])
def test_inconsistent_inputs_are_refused_by_the_schema(bad, match):
    inp = {"label_words": WORDS, "demonstrations": DEMOS, "queries": QUERIES, **bad}
    with pytest.raises(ValidationError, match=match):
        parse_job({"kind": "icl_anchors", "model": "m", "input": inp})


def test_analyses_the_input_cannot_feed_are_refused_with_the_field():
    req = parse_job({"kind": "icl_anchors", "model": "m", "params": {"analyses": ["auc", "reweighting"]},
                     "input": {"label_words": WORDS, "demonstrations": DEMOS, "query": QUERIES[0]}})
    errors = req.over_facts(Facts())
    assert [e.loc for e in errors] == [["params", "analyses"], ["params", "analyses"]]
    steps = parse_job({"kind": "icl_anchors", "model": "m", "params": {"epochs": 200},
                       "input": {"label_words": WORDS, "demonstrations": DEMOS, "queries": QUERIES,
                                 "fit_examples": QUERIES}}).over_facts(Facts())
    assert steps[0].loc == ["params", "epochs"] and steps[0].ctx["limit"] == "max_steps"


# -- flows -----------------------------------------------------------------------------------------
def test_the_flows_are_the_paper_means_recomputed_pair_by_pair(tiny_llama):
    task, prompts = prompts_of(tiny_llama, job(tiny_llama))
    p = prompts[0]
    maps, _ = saliency(tiny_llama, p.ids, task.label_ids, p.gold)
    assert len(maps) == 3 and maps[0].shape == (len(p.ids), len(p.ids))
    q, labels = p.target, set(p.label_positions)
    for m in maps:
        wp = [float(m[i, j]) for i in labels for j in range(i)]
        pq = [float(m[q, j]) for j in labels]
        ww = [float(m[i, j]) for i in range(q + 1) for j in range(i) if i not in labels and not (i == q and j in labels)]
        assert len(wp) == sum(labels) and len(ww) == q * (q + 1) // 2 - sum(labels) - len(labels)  # the reference's counts
        assert flow_means(m, p.label_positions, q) == pytest.approx((np.mean(wp), np.mean(pq), np.mean(ww)), rel=1e-5)
    assert all(float(m.triu(1).abs().max()) == 0.0 for m in maps)  # causal: nothing above the diagonal
    assert float(maps[-1][:q].sum()) == 0.0  # last layer: only the target's row reaches the loss


def test_the_saliency_equals_finite_differences_of_the_loss(gpt2_64):
    lm = gpt2_64
    task, prompts = prompts_of(lm, job(lm))
    p = prompts[1]
    maps, _z0 = saliency(lm, p.ids, task.label_ids, p.gold)

    def loss_scaled(layer: int, i: int, j: int, eps: float) -> float:
        def edit(l, A, q0):
            if l != layer:
                return A
            out = A.clone()
            out[:, :, i - q0, j] = out[:, :, i - q0, j] * (1 + eps)
            return out
        with torch.no_grad(), anchored(lm, edit=edit):
            logits = lm.model(input_ids=torch.tensor([p.ids]), use_cache=False, logits_to_keep=1).logits[0, -1]
        return float(loss_of(label_logits(logits, task.label_ids), p.gold))

    q = p.target
    entries = [(0, p.label_positions[1], 3), (1, q, p.label_positions[0]), (1, p.label_positions[2], 5),
               (2, q, p.label_positions[3]), (2, q, 1), (0, q - 2, q - 4)]
    eps = 1e-3  # central differences: O(eps²) truncation, rounding ~1e-16 / (saliency · eps)
    for layer, i, j in entries:
        fd = (loss_scaled(layer, i, j, eps) - loss_scaled(layer, i, j, -eps)) / (2 * eps)
        assert float(maps[layer][i, j]) == pytest.approx(abs(fd), rel=1e-4, abs=1e-12), (layer, i, j)


def _planted_gpt2(route: str):
    """A 3-layer GPT-2 whose target (token Q) reads the answer (dims A_P, A_N, read by the LM head at
    the label tokens P, N) from the label-word positions (route "labels") or from one text token
    (route "text"), in layers 1 and 2; layer 0 attends uniformly. Single head, no MLP, no positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer("bpe")
    d, s = 32, 12.0
    P, N, Q, T0 = 20, 21, 30, 40  # token ids; T0..T0+7 text
    LABEL, ID_P, ID_N, TARGET, KEYTXT, A_P, A_N = 8, 9, 10, 11, 14, 12, 13
    cfg = GPT2Config(vocab_size=len(tok), n_embd=d, n_layer=3, n_head=1, n_positions=128, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        wte = model.transformer.wte.weight
        for k in range(8):
            wte[T0 + k, k] = 1.0
        wte[T0, KEYTXT] = 1.0  # the text token the "text" route reads
        wte[T0, ID_P] = 1.0  # ... and it carries the answer "P" there
        wte[P, LABEL], wte[P, ID_P] = 1.0, 1.0
        wte[N, LABEL], wte[N, ID_N] = 1.0, 1.0
        wte[Q, TARGET] = 1.0
        for i, block in enumerate(model.transformer.h):
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
            w = block.attn.c_attn.weight  # (d, 3d): q | k | v
            if i > 0:
                w[TARGET, 0] = s  # the target's query
                w[LABEL if route == "labels" else KEYTXT, d + 0] = 1.0  # the keys it matches
                w[LABEL, 1] = s  # label words read label words (not text) in deep layers
                w[LABEL, d + 1] = 1.0
            w[ID_P, 2 * d + A_P] = 1.0  # values: the answer
            w[ID_N, 2 * d + A_N] = 1.0
            block.attn.c_proj.weight.copy_(torch.eye(d))
        model.transformer.ln_f.weight.fill_(1.0)
        model.lm_head.weight[P, A_P] = 0.5  # logits of a few units: the loss is not saturated
        model.lm_head.weight[N, A_N] = 0.5
    lm = wrap(ModelSpec(id="planted", path="-"), model, tok)
    # text, label, text, label, ..., the query's text, the target
    ids = [1]
    for k in range(6):
        ids += [T0 + (k % 7) + 1, T0 + (k + 3) % 7 + 1, P if k % 3 != 2 else N]  # 4 P, 2 N
    ids += [T0, T0 + 5, T0 + 2, Q]
    labels = [i for i, t in enumerate(ids) if t in (P, N)]
    return lm, ids, labels, [P, N]


@pytest.mark.parametrize("route", ["labels", "text"])
def test_where_the_answer_routes_through_label_words_s_pq_dominates_deep_layers(route):
    lm, ids, labels, label_ids = _planted_gpt2(route)
    with torch.no_grad():  # the plant, read with HF's own eager attention: where the target looks in layers 1-2
        lm.model.set_attn_implementation("eager")
        attentions = lm.model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        lm.model.set_attn_implementation("sdpa")
    read = labels if route == "labels" else [len(ids) - 4]  # the label words, or the text token T0
    assert all(float(attentions[layer][0, 0, -1, read].sum()) > 0.95 for layer in (1, 2))
    maps, _ = saliency(lm, ids, label_ids, 0)
    flows = np.array([flow_means(m, labels, len(ids) - 1) for m in maps])  # (L, 3): wp, pq, ww
    for layer in (1, 2):
        wp, pq, ww = flows[layer]
        if route == "labels":
            assert pq > 5 * max(wp, ww), flows
        else:
            assert pq < ww, flows


# -- batches on the shared prefix, the target's attention, the AUC --------------------------------
def _full_label_logits(lm, prompt, edit=None) -> torch.Tensor:
    """(V,) logits at the prompt's target from one full forward (no cache)."""
    with torch.no_grad(), anchored(lm, edit=edit):
        return lm.model(input_ids=torch.tensor([prompt.ids]), use_cache=False).logits[0, -1]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_prefix_batches_equal_full_forwards_plain_and_reweighted(model, request):
    lm = request.getfixturevalue(model)
    task, prompts = prompts_of(lm, job(lm))
    runner = PrefixRunner(lm, prompts, task.label_ids, max_rows=4)
    assert 0 < runner.P < min(len(p.ids) for p in prompts)
    beta = torch.randn(len(lm.layers), lm.facts()["n_heads"], 2, generator=torch.Generator().manual_seed(0))
    cols = torch.tensor(prompts[0].label_positions)
    classes = torch.tensor(prompts[0].label_classes)
    rows = list(range(len(prompts)))
    with torch.no_grad():
        plain = torch.cat([runner.forward(b) for b in runner.batches(rows)])
        edited = torch.cat([runner.forward(b, edit=reweight_edit(beta, cols, classes, runner.targets(b)))
                            for b in runner.batches(rows)])
    for r, p in enumerate(prompts):
        full = label_logits(_full_label_logits(lm, p), task.label_ids)
        full_edit = label_logits(_full_label_logits(lm, p, reweight_edit(beta, cols, classes, torch.tensor([p.target]))),
                                 task.label_ids)
        assert torch.allclose(plain[r], full, atol=1e-5) and torch.allclose(edited[r], full_edit, atol=1e-5)
    assert float((plain - edited).abs().max()) > 1e-4  # the edit does something


def test_the_targets_attention_on_label_words_is_hfs_own():
    lm = make_tiny_llama()  # its own: `output_attentions` makes transformers install hooks it keeps
    task, prompts = prompts_of(lm, job(lm))
    runner = PrefixRunner(lm, prompts, task.label_ids, max_rows=4)
    scores, _ = target_attention(runner, list(range(len(prompts))), 2)  # (Q, L, C)
    lm.model.set_attn_implementation("eager")
    try:
        for r, p in enumerate(prompts):
            with torch.no_grad():
                att = lm.model(input_ids=torch.tensor([p.ids]), output_attentions=True).attentions
            for layer in range(len(lm.layers)):
                row = att[layer][0, :, p.target].sum(0)  # (n,) summed over heads
                want = [sum(float(row[j]) for j, c in zip(p.label_positions, p.label_classes) if c == k) for k in (0, 1)]
                assert scores[r, layer].tolist() == pytest.approx(want, abs=1e-5)
    finally:
        lm.model.set_attn_implementation("sdpa")


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: the probability that a positive outscores a negative (ties count half)."""
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_the_auc_is_the_rank_statistic_and_r_the_cumulative_share():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 5, 2))
    predicted = (scores[:, 3, 1] + 0.3 * rng.random(40) > 0.6).astype(int)
    auc, present = auc_per_layer(scores, predicted)
    assert present == 2
    assert auc == pytest.approx([_rank_auc(predicted, scores[:, l, 1]) for l in range(5)])
    assert auc[3] > 0.8
    r = cumulative_share(auc)
    assert r[-1] == pytest.approx(1.0)
    assert r == pytest.approx([sum(a - 0.5 for a in auc[:l + 1]) / sum(a - 0.5 for a in auc) for l in range(5)])
    assert cumulative_share([0.5, 0.5]) is None
    with pytest.raises(ValueError):
        auc_per_layer(scores, np.zeros(40, dtype=int))


# -- re-weighting ----------------------------------------------------------------------------------
def test_the_beta_gradient_equals_finite_differences(gpt2_64):
    lm = gpt2_64
    task, prompts = prompts_of(lm, job(lm))
    runner = PrefixRunner(lm, prompts, task.label_ids)
    cols, classes = torch.tensor(prompts[0].label_positions), torch.tensor(prompts[0].label_classes)
    rows = [0, 1, 2]
    gold = torch.tensor([prompts[r].gold for r in rows])
    beta = (0.3 * torch.randn(len(lm.layers), 4, 2, generator=torch.Generator().manual_seed(1))).double()

    def loss(b: torch.Tensor) -> torch.Tensor:
        z = runner.forward(rows, edit=reweight_edit(b, cols, classes, runner.targets(rows), renormalize=True))
        return F.cross_entropy(z, gold)

    b = beta.clone().requires_grad_()
    with torch.enable_grad():
        loss(b).backward()
    eps = 1e-5
    for idx in [(0, 0, 0), (1, 2, 1), (2, 3, 0), (2, 1, 1)]:
        up, down = beta.clone(), beta.clone()
        up[idx] += eps
        down[idx] -= eps
        with torch.no_grad():
            fd = (float(loss(up)) - float(loss(down))) / (2 * eps)
        assert float(b.grad[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-10), idx


def test_zero_beta_is_the_plain_model_and_nothing_persists(tiny_llama):
    lm = tiny_llama
    task, prompts = prompts_of(lm, job(lm))
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    hooks, impl = hook_count(lm.model), lm.config._attn_implementation
    runner = PrefixRunner(lm, prompts, task.label_ids)
    cols, classes = torch.tensor(prompts[0].label_positions), torch.tensor(prompts[0].label_classes)
    rows = list(range(len(prompts)))
    zero = torch.zeros(len(lm.layers), 6, 2)
    with torch.no_grad():
        plain = runner.forward(rows)
        for renorm in (False, True):
            same = runner.forward(rows, edit=reweight_edit(zero, cols, classes, runner.targets(rows), renorm))
            assert torch.allclose(plain, same, atol=1e-6)
    _beta, history = fit_beta(runner, [0, 1, 2, 3], [0, 1, 0, 1], 2, epochs=4, lr=0.5, batch_size=2, seed=0,
                             renormalize=False)
    assert history[-1] < history[0]  # Adam lowers the fit loss
    with pytest.raises(RuntimeError, match="boom"), anchored(lm, edit=lambda l, A, q0: A):
        raise RuntimeError("boom")
    assert all(torch.equal(v, weights[k]) for k, v in lm.model.state_dict().items())
    assert hook_count(lm.model) == hooks and lm.config._attn_implementation == impl and _session.get() is None
    with torch.no_grad():
        assert torch.equal(runner.forward(rows), plain)  # no β left behind


# -- the `anchors` intervention on later jobs -------------------------------------------------------
def test_find_positions_reads_label_words_after_the_slot_and_the_last_slot_as_target():
    slot, labels = [7, 8], [50, 60]
    ids = [1, 3, 7, 8, 50, 4, 7, 8, 60, 5, 7, 9, 50, 6, 7, 8]
    assert find_positions(ids, slot, labels) == ([4, 8], [0, 1], 15)
    assert find_positions(ids + [60], slot, labels) == ([4, 8], [0, 1], 15)  # the answer is not a demonstration
    assert find_positions([1, 2, 3], slot, labels) == ([], [], None)
