"""`knowledge_edit`: edit one fact through its knowledge neurons, store the edit set, evaluate it.

Dai et al. 2022, §5 ("Updating facts", "Erasing relations"), reference code
github.com/Hunter-DDM/knowledge-neurons. Operations on neurons N = {(l, i)} with value vectors
v_i = W_out^l[:, i] (`workers.internals.ffn`):
- suppress / enhance: m_i ← factor · m_i (0 / 2), i.e. δ_i = (factor − 1) v_i;
- erase: v_i ← v_i − λ s_i u_a, s_i = sign of the neuron's mean activation on the fact's prompts
  (SwiGLU activations are signed; the paper's GELU neurons fire positive, so s_i = 1 there, and
  without s_i an edit of a negatively firing neuron raises the answer), u_a the answer's **unembedding** row (the output embedding, averaged
  over the answer's tokens). The paper's BERT ties input and output embeddings, so its "word
  embedding" is both; LLaMA-family models need not tie them (EasyEdit's LLaMA setting uses the input
  embedding, which is then a different vector), and the unembedding row is the one that raises or
  lowers the answer's logit;
- update: v_i ← v_i − λ s_i u_old + λ s_i u_new.
Each is stored as value-vector deltas δ_i (an `edits` artifact) and applied by hooks at every
position (`workers.interventions.edits`), never by writing the shared weights.

Evaluation (token-level and teacher-forced, as EasyEdit's protocol; definitions in
docs/knowledge.md): reliability on `prompts`, generalization on `paraphrases`, locality on
`control_prompts`. λ defaults: 0.5 for erase and update (SmolLM2 figures in docs/knowledge.md).
"""

from __future__ import annotations

import torch

from schemas.kinds.knowledge_edit import (
    KnowledgeEditJob,
    KnowledgeEditParams,
    KnowledgeEditResult,
    PromptScore,
    SetScore,
)
from workers.context import Context
from workers.errors import BadInput
from workers.internals.ffn import ValueDelta, clean_activations, ffn_out_modules, n_neurons, scale_deltas
from workers.interventions.edits import ARTIFACT_KIND, to_data
from workers.knowledge.neurons import answer_scores, encode_answer, encode_prompts, locate
from workers.models.loading import LM

DEFAULT_LAMBDA = {"erase": 0.5, "update": 0.5}
DEFAULT_FACTOR = {"suppress": 0.0, "enhance": 2.0}


def unembedding(lm: LM, token_ids: list[int]) -> torch.Tensor:
    """Mean unembedding row of the tokens, (hidden,)."""
    if lm.arch.unembed is None:
        raise BadInput(f"model {lm.id} has no unembedding (an encoder without LM head)")
    w = lm.module(lm.arch.unembed).weight  # (vocab, hidden)
    return w[torch.tensor(token_ids, device=w.device)].float().mean(0).detach()


@torch.no_grad()
def activation_signs(lm: LM, prompt_ids: list[list[int]], answer: list[int], neurons: list[tuple[int, int]]) -> dict:
    """sign(mean m_i) over the fact's prompts at the position predicting the answer's first token."""
    total = None
    for ids in prompt_ids:
        m, _ = clean_activations(lm, ids[:-1], ids[-1])  # (n_layers, inter)
        total = m.float() if total is None else total + m.float()
    return {(lay, i): (1.0 if float(total[lay, i]) >= 0 else -1.0) for lay, i in neurons}  # type: ignore[index]


def edit_deltas(lm: LM, neurons: list[tuple[int, int]], params: KnowledgeEditParams, answer: list[int],
                new_answer: list[int] | None, signs: dict | None = None) -> list[ValueDelta]:
    """δ_i per neuron. erase/update use sign(m_i) (`signs`, default +1): a SwiGLU activation can be
    negative, and then v_i − λu would *raise* the answer (m_i(v_i − λu) = m_i v_i + |m_i| λu)."""
    op = params.operation
    if op in DEFAULT_FACTOR:
        factor = DEFAULT_FACTOR[op] if params.factor is None else params.factor
        return scale_deltas(lm, neurons, factor)
    lam = DEFAULT_LAMBDA[op] if params.lam is None else params.lam
    direction = -lam * unembedding(lm, answer)  # (hidden,)
    if op == "update":
        direction = direction + lam * unembedding(lm, new_answer)  # type: ignore[arg-type]
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(layer, []).append(i)
    signs = signs or {}
    return [ValueDelta(layer, idx, torch.stack([signs.get((layer, i), 1.0) * direction for i in idx]))
            for layer, idx in sorted(by_layer.items())]


def score_set(lm: LM, texts: list[str], ids: list[list[int]], answer: list[int], new_answer: list[int] | None,
              deltas: list[ValueDelta], operation: str) -> SetScore:
    """Token-level scores of the edit on one prompt set (teacher-forced answer tokens)."""
    rows, hits, total = [], 0, 0
    for text, p in zip(texts, ids):
        pb, tb = answer_scores(lm, p, answer)
        pa, ta = answer_scores(lm, p, answer, deltas, all_positions=True)
        row = PromptScore(prompt=text, prob_before=float(pb.mean()), prob_after=float(pa.mean()),
                          top1_before=lm.token_strings([int(tb[0])])[0], top1_after=lm.token_strings([int(ta[0])])[0])
        target = torch.tensor(answer, device=lm.device)
        if operation == "update":
            nb, _ = answer_scores(lm, p, new_answer)  # type: ignore[arg-type]
            na, nt = answer_scores(lm, p, new_answer, deltas, all_positions=True)  # type: ignore[arg-type]
            row.new_prob_before, row.new_prob_after = float(nb.mean()), float(na.mean())
            hits += int((nt == torch.tensor(new_answer, device=lm.device)).sum())
            total += len(new_answer)  # type: ignore[arg-type]
        elif operation == "enhance":
            hits += int((ta == target).sum())
            total += len(answer)
        else:  # suppress, erase: the answer token is no longer top-1
            hits += int((ta != target).sum())
            total += len(answer)
        rows.append(row)
    mean = lambda xs: float(sum(xs) / len(xs))  # noqa: E731
    out = SetScore(score=hits / total if total else None, prob_before=mean([r.prob_before for r in rows]),
                   prob_after=mean([r.prob_after for r in rows]), prompts=rows)
    if operation == "update":
        out.new_prob_before = mean([r.new_prob_before for r in rows])
        out.new_prob_after = mean([r.new_prob_after for r in rows])
    return out


@torch.no_grad()
def _top1(lm: LM, ids: list[int], deltas: list[ValueDelta] | None) -> tuple[int, torch.Tensor]:
    from workers.internals.ffn import value_deltas

    with value_deltas(lm, deltas or []):
        logits = lm.model(input_ids=torch.tensor([ids], device=lm.device), logits_to_keep=1).logits[0, -1]
    probs = logits.float().softmax(-1)  # (vocab,)
    return int(probs.argmax()), probs


def locality(lm: LM, texts: list[str], ids: list[list[int]], deltas: list[ValueDelta], tol: float) -> SetScore:
    """Share of control prompts whose top-1 next token is unchanged and whose probability moved ≤ tol."""
    rows, same = [], 0
    for text, p in zip(texts, ids):
        t0, p0 = _top1(lm, p, None)
        t1, p1 = _top1(lm, p, deltas)
        row = PromptScore(prompt=text, prob_before=float(p0[t0]), prob_after=float(p1[t0]),
                          top1_before=lm.token_strings([t0])[0], top1_after=lm.token_strings([t1])[0])
        same += int(t0 == t1 and abs(row.prob_after - row.prob_before) <= tol)
        rows.append(row)
    return SetScore(score=same / len(rows), prob_before=sum(r.prob_before for r in rows) / len(rows),
                    prob_after=sum(r.prob_after for r in rows) / len(rows), prompts=rows)


def run(lm: LM, job: KnowledgeEditJob, ctx: Context) -> KnowledgeEditResult:
    progress, limits = ctx.progress, ctx.limits
    params: KnowledgeEditParams = job.params
    inp = job.input
    if params.operation == "update" and inp.new_answer is None:
        raise BadInput("operation 'update' needs input.new_answer")
    prompts = encode_prompts(lm, inp.prompts, limits, "prompts")
    paraphrases = encode_prompts(lm, inp.paraphrases, limits, "paraphrases")
    controls = encode_prompts(lm, inp.control_prompts, limits, "control_prompts")
    answer = encode_answer(lm, inp.answer)
    new_answer = encode_answer(lm, inp.new_answer, "new_answer") if inp.new_answer is not None else None
    if inp.neurons is not None:
        n_layers, width = len(ffn_out_modules(lm)), n_neurons(lm)
        for k, n in enumerate(inp.neurons):
            if n.layer >= n_layers or n.index >= width:
                raise BadInput(f"input.neurons[{k}]: model {lm.id} has {n_layers} layers of {width} neurons")
        neurons, located, found = inp.neurons, False, None
    else:
        found = locate(lm, prompts, answer, params, progress, (0.0, 0.8), controls)
        neurons, located = found.neurons, True
        if not neurons:
            raise BadInput("no knowledge neurons were located; lower params.threshold or params.sharing_ratio"
                           + (f" (the control filter dropped {found.filtered_count}; params.filter_controls)"
                              if found.filtered_count else ""))
    pairs = sorted({(n.layer, n.index) for n in neurons})
    signs = activation_signs(lm, prompts, answer, pairs) if params.operation in DEFAULT_LAMBDA else None
    deltas = edit_deltas(lm, pairs, params, answer, new_answer, signs)
    reliability = score_set(lm, inp.prompts, prompts, answer, new_answer, deltas, params.operation)
    progress(0.9)
    generalization = (score_set(lm, inp.paraphrases, paraphrases, answer, new_answer, deltas, params.operation)
                      if paraphrases else None)
    loc = locality(lm, inp.control_prompts, controls, deltas, params.locality_tolerance) if controls else None
    store = ctx.artifacts
    view = store.put(ARTIFACT_KIND, lm.id, {
        "operation": params.operation,
        "neurons": [n.model_dump(mode="json") for n in neurons],
        "answer": inp.answer, "new_answer": inp.new_answer,
        "params": params.model_dump(mode="json", by_alias=True),
        "deltas": to_data(deltas),
        "evaluation": {"reliability": reliability.score,
                       "generalization": generalization.score if generalization else None,
                       "locality": loc.score if loc else None},
    })
    progress(1.0)
    return KnowledgeEditResult(provenance=ctx.provenance(lm, job), edit_id=view.id, operation=params.operation, neurons=neurons, located=located,
                               filtered_neurons=found.filtered if found else None,
                               filtered_count=found.filtered_count if found else None,
                               reliability=reliability, generalization=generalization, locality=loc)
