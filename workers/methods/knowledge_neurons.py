"""`knowledge_neurons`: locate the FFN neurons that express a fact and measure their effect.

Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers" (§3), reference code
github.com/Hunter-DDM/knowledge-neurons (`1_analyze_mlm.py` attributes, `3_get_kn.py` refines):
1. per prompt, the IG score of every FFN neuron of every layer for the answer's probability at the
   position that predicts it (`workers.ffn`; multi-token answers: each token teacher-forced at its
   own position, scores averaged over the tokens);
2. coarse neurons of a prompt: score > `threshold` × that prompt's max score (0.2);
3. knowledge neurons: coarse on at least `sharing_ratio` of the prompts; `"adaptive"` starts at 0.7
   and moves by 0.05 until the count lands in `target_count` ([2, 5]), as the paper describes;
4. their effect: the answer's probability with them suppressed (activation set to 0) and enhanced
   (× `enhance_factor`, 2) at the answer-predicting positions, as the paper's Fig. 3 / 4; the same
   on `control_prompts` (their own top-1 next token), and with as many random neurons of the same
   layers suppressed, the control the paper's "knowledge-specific" claim needs.

Where this differs: the model is causal (the paper's BERT reads a [MASK]); the IG path covers all
layers in one batched pass with a shared KV cache (the reference runs one layer at a time); the
reference's extra filter against neurons shared across relations needs many facts and is left to
the caller (run several facts, drop common neurons).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from schemas.common import TextInput
from schemas.kinds.knowledge_neurons import (MAX_ANSWER_TOKENS, KnowledgeNeuronsParams, KnowledgeNeuronsResult,
                                             LocateParams, Neuron, PromptEffect)
from schemas.limits import Limits
from workers.errors import BadInput
from workers.ffn import ValueDelta, fact_attributions, ffn_out_modules, n_neurons, scale_deltas, value_deltas
from workers.inputs import encode_continuation, encode_prompt
from workers.models.loading import LM
from workers.progress import Progress


def encode_prompts(lm: LM, prompts: list[str], limits: Limits, field: str) -> list[list[int]]:
    return [encode_prompt(lm, TextInput(prompt=p), limits, ("input", field, i)).ids  # type: ignore[arg-type]
            for i, p in enumerate(prompts)]


def encode_answer(lm: LM, answer: str, field: str = "answer") -> list[int]:
    ids = encode_continuation(lm, answer)
    if len(ids) > MAX_ANSWER_TOKENS:
        raise BadInput(f"`{field}` has {len(ids)} tokens, over {MAX_ANSWER_TOKENS}")
    return ids


@dataclass
class Located:
    neurons: list[Neuron]
    sharing_ratio: float
    coarse_counts: list[int]


def check_layers(lm: LM, layers: list[int] | None) -> list[int] | None:
    n_layers = len(ffn_out_modules(lm))
    if layers is not None and any(lay >= n_layers for lay in layers):
        raise BadInput(f"params.layers: model {lm.id} has {n_layers} layers (0..{n_layers - 1})")
    return sorted(set(layers)) if layers is not None else None


def refine(scores: torch.Tensor, params: LocateParams) -> Located:
    """Threshold per prompt, then sharing across prompts. scores: (P, n_layers, inter)."""
    P = scores.shape[0]
    peak = scores.flatten(1).max(1).values  # (P,)
    coarse = (scores > params.threshold * peak[:, None, None]) & (peak[:, None, None] > 0)  # (P, n_layers, inter)
    share = coarse.float().mean(0)  # (n_layers, inter)
    lo, hi = params.target_count

    def count(p: float) -> int:
        return int((share >= p - 1e-6).sum())

    if params.sharing_ratio == "adaptive":
        p, last_dir, prev = 0.7, 0, None
        for _ in range(40):
            k = count(p)
            direction = 1 if k > hi else -1 if k < lo else 0
            if direction == 0:
                break
            if last_dir and direction != last_dir:  # stepped over the range: keep the closer side
                gap = lambda c: lo - c if c < lo else c - hi  # noqa: E731
                if prev is not None and (gap(count(prev)), -count(prev)) < (gap(k), -k):
                    p = prev
                break
            nxt = round(p + 0.05 * direction, 4)
            if not (1.0 / P - 1e-6 <= nxt <= 1.0 + 1e-6):
                break
            prev, p, last_dir = p, nxt, direction
    else:
        p = params.sharing_ratio
    kept = (share >= p - 1e-6).nonzero().tolist()
    mean = scores.mean(0)  # (n_layers, inter)
    neurons = [Neuron(layer=lay, index=i, score=float(mean[lay, i]), shared_by=float(share[lay, i]))
               for lay, i in kept]
    neurons.sort(key=lambda n: -n.score)
    return Located(neurons[: params.max_neurons], float(p), [int(c) for c in coarse.flatten(1).sum(1)])


def locate(lm: LM, prompt_ids: list[list[int]], answer_ids: list[int], params: LocateParams,
           progress: Progress, span: tuple[float, float] = (0.0, 1.0)) -> Located:
    layers = check_layers(lm, params.layers)
    lo, hi = span
    scores = []
    for k, ids in enumerate(prompt_ids):
        a = lo + (hi - lo) * k / len(prompt_ids)
        b = lo + (hi - lo) * (k + 1) / len(prompt_ids)
        scores.append(fact_attributions(lm, ids, answer_ids, params.n_steps, params.rule, layers,
                                        progress=lambda f: progress(a + (b - a) * f)))
    return refine(torch.stack(scores), params)  # (P, n_layers, inter)


@torch.no_grad()
def answer_scores(lm: LM, prompt_ids: list[int], answer_ids: list[int], deltas: list[ValueDelta] | None = None,
                  all_positions: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced (probability of each answer token, top-1 token id at its position), each (T,).

    `deltas` act at the answer-predicting positions only, or everywhere with `all_positions` (edits)."""
    n, T = len(prompt_ids), len(answer_ids)
    seq = prompt_ids + answer_ids[:-1]  # (L,)
    positions = None if all_positions else list(range(n - 1, n - 1 + T))
    with value_deltas(lm, deltas or [], positions):
        logits = lm.model(input_ids=torch.tensor([seq], device=lm.device), logits_to_keep=T).logits[0, -T:]
    probs = logits.float().softmax(-1)  # (T, vocab)
    return probs[torch.arange(T), torch.tensor(answer_ids, device=lm.device)], probs.argmax(-1)


def answer_prob(lm: LM, prompt_ids: list[int], answer_ids: list[int], deltas: list[ValueDelta] | None = None,
                all_positions: bool = False) -> float:
    """The answer's probability: mean over its tokens, teacher-forced."""
    return float(answer_scores(lm, prompt_ids, answer_ids, deltas, all_positions)[0].mean())


@torch.no_grad()
def next_token(lm: LM, prompt_ids: list[int]) -> int:
    return int(lm.model(input_ids=torch.tensor([prompt_ids], device=lm.device), logits_to_keep=1).logits[0, -1].argmax())


def random_neurons(lm: LM, located: list[Neuron], seed: int) -> list[Neuron]:
    """As many random neurons as located, in the same layers (one per located one), none of them."""
    rng = random.Random(seed)
    taken = {(n.layer, n.index) for n in located}
    width = n_neurons(lm)
    out = []
    for n in located:
        while (pick := (n.layer, rng.randrange(width))) in taken:
            pass
        taken.add(pick)
        out.append(Neuron(layer=pick[0], index=pick[1]))
    return out


def _rel(after: list[float], before: list[float]) -> float:
    return float(sum(a / max(b, 1e-12) - 1.0 for a, b in zip(after, before)) / max(1, len(before)))


def run(lm: LM, request, progress: Progress, limits: Limits | None = None) -> KnowledgeNeuronsResult:
    params: KnowledgeNeuronsParams = request.params
    limits = limits or Limits()
    prompts = encode_prompts(lm, request.input.prompts, limits, "prompts")
    controls = encode_prompts(lm, request.input.control_prompts, limits, "control_prompts")
    answer = encode_answer(lm, request.input.answer)
    located = locate(lm, prompts, answer, params, progress, (0.0, 0.9))
    pairs = [(n.layer, n.index) for n in located.neurons]
    suppress = scale_deltas(lm, pairs, 0.0) if pairs else []
    enhance = scale_deltas(lm, pairs, params.enhance_factor) if pairs else []
    rand = random_neurons(lm, located.neurons, params.seed) if params.random_baseline and pairs else None
    rand_suppress = scale_deltas(lm, [(n.layer, n.index) for n in rand], 0.0) if rand else None

    effects = []
    for text, ids in zip(request.input.prompts, prompts):
        effects.append(PromptEffect(
            prompt=text, prob=answer_prob(lm, ids, answer), suppressed=answer_prob(lm, ids, answer, suppress),
            enhanced=answer_prob(lm, ids, answer, enhance),
            random_suppressed=answer_prob(lm, ids, answer, rand_suppress) if rand_suppress else None))
    control_effects = []
    for text, ids in zip(request.input.control_prompts, controls):
        top = [next_token(lm, ids)]
        control_effects.append(PromptEffect(
            prompt=text, prob=answer_prob(lm, ids, top), suppressed=answer_prob(lm, ids, top, suppress),
            enhanced=answer_prob(lm, ids, top, enhance), top1_token=lm.token_strings(top)[0]))
    progress(1.0)

    before = [e.prob for e in effects]
    summary = {"suppressed": _rel([e.suppressed for e in effects], before),
               "enhanced": _rel([e.enhanced for e in effects], before)}
    if rand_suppress:
        summary["random_suppressed"] = _rel([e.random_suppressed for e in effects], before)
    if control_effects:
        cb = [e.prob for e in control_effects]
        summary["control_suppressed"] = _rel([e.suppressed for e in control_effects], cb)
        summary["control_enhanced"] = _rel([e.enhanced for e in control_effects], cb)
    return KnowledgeNeuronsResult(
        answer_tokens=lm.token_strings(answer), neurons=located.neurons, sharing_ratio=located.sharing_ratio,
        coarse_counts=located.coarse_counts, random_neurons=rand, prompts=effects, controls=control_effects,
        summary=summary)
