"""Knowledge neurons, the shared machinery: locate the FFN neurons that express a fact and read the
answer's probability with value-vector deltas applied.

Used by the `knowledge_neurons` kind (locate and measure) and the `knowledge_edit` kind (locate, then
edit): a method never imports another method, so what both run lives here. The method and its
differences from Dai et al. 2022 (IG over all layers in one pass, the contrast filter against control
facts, the adaptive sharing ratio) are described in `workers/methods/knowledge_neurons.py` and
docs/knowledge.md.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from schemas.common import TextInput
from schemas.kinds.knowledge_neurons import MAX_ANSWER_TOKENS, FilteredNeuron, LocateParams, Neuron
from schemas.limits import Limits
from workers.errors import BadInput
from workers.internals.ffn import ValueDelta, fact_attributions, ffn_out_modules, value_deltas
from workers.internals.inputs import encode_continuation, encode_prompt, resolve_indices
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
    filtered: list[FilteredNeuron] | None = None  # None: no contrast filter ran
    filtered_count: int | None = None


def coarse_sets(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per prompt, the neurons over threshold × that prompt's max score. scores: (P, n_layers, inter) -> bool."""
    peak = scores.flatten(1).max(1).values  # (P,)
    return (scores > threshold * peak[:, None, None]) & (peak[:, None, None] > 0)  # (P, n_layers, inter)


def refine(scores: torch.Tensor, params: LocateParams, contrast: torch.Tensor | None = None) -> Located:
    """Threshold per prompt, the contrast filter, then sharing across prompts.

    scores: (P, n_layers, inter) for the fact's prompts; contrast: (C, n_layers, inter) for the control
    prompts' own top-1 tokens, or None. A neuron over `contrast_threshold` × max on ≥ `contrast_ratio` of
    the controls is dropped before the sharing ratio is chosen, so `target_count` holds for what is left."""
    P = scores.shape[0]
    coarse = coarse_sets(scores, params.threshold)  # (P, n_layers, inter)
    share = coarse.float().mean(0)  # (n_layers, inter)
    drop = None
    if contrast is not None and contrast.shape[0]:
        hits = coarse_sets(contrast, params.contrast_threshold)  # (C, n_layers, inter)
        drop = hits.float().mean(0) >= params.contrast_ratio - 1e-6  # (n_layers, inter)
    kept_share = share.masked_fill(drop, 0.0) if drop is not None else share
    lo, hi = params.target_count

    def count(p: float) -> int:
        return int((kept_share >= p - 1e-6).sum())

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
    mean = scores.mean(0)  # (n_layers, inter)

    def by_score(mask: torch.Tensor, make) -> list:
        found = [make(lay, i) for lay, i in mask.nonzero().tolist()]
        return sorted(found, key=lambda n: -n.score)

    neurons = by_score(kept_share >= p - 1e-6, lambda lay, i: Neuron(
        layer=lay, index=i, score=float(mean[lay, i]), shared_by=float(share[lay, i])))
    filtered = None
    if drop is not None:
        filtered = by_score((share >= p - 1e-6) & drop, lambda lay, i: FilteredNeuron(
            layer=lay, index=i, score=float(mean[lay, i]), shared_by=float(share[lay, i]),
            controls=hits[:, lay, i].nonzero().flatten().tolist()))
    return Located(neurons[: params.max_neurons], float(p), [int(c) for c in coarse.flatten(1).sum(1)],
                   filtered[: params.max_neurons] if filtered is not None else None,
                   len(filtered) if filtered is not None else None)


def locate(lm: LM, prompt_ids: list[list[int]], answer_ids: list[int], params: LocateParams,
           progress: Progress, span: tuple[float, float] = (0.0, 1.0),
           control_ids: list[list[int]] | None = None, cache_controls: bool = False) -> Located:
    """IG per prompt (and, with `params.filter_controls`, per control prompt for its own top-1 next
    token, same steps, rule and layers), then `refine`. `cache_controls`: the control prompts are a
    fixed set (the built-in control facts), so their scores are kept on the model (`control_scores_cache`)."""
    layers = None if params.layers is None else resolve_indices(  # None: every layer
        params.layers, len(ffn_out_modules(lm)), ["params", "layers"], "layers", "n_layers")
    controls = control_ids if params.filter_controls and control_ids else []
    cached = [control_scores_cache(lm, ids, params, layers) if cache_controls else None for ids in controls]
    jobs = [(ids, answer_ids) for ids in prompt_ids] + [(ids, None) for ids, c in zip(controls, cached) if c is None]
    lo, hi = span
    scores = []
    for k, (ids, target) in enumerate(jobs):
        a = lo + (hi - lo) * k / len(jobs)
        b = lo + (hi - lo) * (k + 1) / len(jobs)
        scores.append(fact_attributions(lm, ids, target if target is not None else [next_token(lm, ids)],
                                        params.n_steps, params.rule, layers,
                                        progress=lambda f: progress(a + (b - a) * f)))
    P = len(prompt_ids)
    fresh = iter(scores[P:])
    contrast = []
    for ids, c in zip(controls, cached):
        if c is None:
            c = next(fresh)
            if cache_controls:
                control_scores_cache(lm, ids, params, layers, store=c)
        contrast.append(c)
    return refine(torch.stack(scores[:P]), params, torch.stack(contrast) if contrast else None)


# Control-prompt IG scores depend only on the model's weights, the prompt and the IG settings, so a fixed
# control set (the built-in control facts) is computed once per worker: kept per model object (weakly,
# so a dropped model frees them; a copied model, e.g. a test's planted copy, has its own).
_CONTROL_SCORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def control_scores_cache(lm: LM, ids: list[int], params: LocateParams, layers: list[int] | None,
                         store: torch.Tensor | None = None) -> torch.Tensor | None:
    """The cached IG scores of one control prompt for its own top-1 token (None: not cached), or store them.

    Keyed by the prompt's ids and what changes the scores: steps, rule, layers, dtype and device. Jobs
    run without interventions (knowledge_neurons carries no `edits` or `steering`), so the weights a
    worker's model computes with are the ones it loaded."""
    key = (tuple(ids), params.n_steps, params.rule, tuple(layers) if layers is not None else None,
           str(lm.dtype), str(lm.device))
    per_model = _CONTROL_SCORES.setdefault(lm.model, {})
    if store is not None:
        per_model[key] = store.detach()
        return store
    return per_model.get(key)


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
