"""`knowledge_neurons`: locate the FFN neurons that express a fact and measure their effect.

Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers" (§3), reference code
github.com/Hunter-DDM/knowledge-neurons (`1_analyze_mlm.py` attributes, `2_get_kn.py` refines):
1. per prompt, the IG score of every FFN neuron of every layer for the answer's probability at the
   position that predicts it (`workers.internals.ffn`; multi-token answers: each token teacher-forced at its
   own position, scores averaged over the tokens);
2. coarse neurons of a prompt: score > `threshold` × that prompt's max score (0.2);
3. contrast filter (`filter_controls`, on by default): the same IG (steps, rule, layers) on each
   control prompt for its own top-1 next token (the caller's `control_prompts`, or, when there are
   none, the built-in control facts of `workers/knowledge/control_facts.py`, `builtin_controls`, whose scores
   are computed once per worker and IG settings and cached on the model); a neuron whose score
   there is over `contrast_threshold` (0.1, half the fact's threshold) × that prompt's max, on at least
   `contrast_ratio` (0.1: any one of up to 10) of the controls, is dropped. Such a neuron also
   expresses other facts: a relation neuron (the paper's §5.2 erases relations with them;
   `2_get_kn.py` calls a neuron found for ≥ 10% of a relation's facts a relation neuron,
   `mode_ratio_rel`) or an output neuron of the last layers. The paper's own refining (§3.3) only
   keeps neurons shared across paraphrases, against one prompt's false positives; it does not remove
   what other facts share, and on SmolLM2 that leaves "capital of" neurons in the France set. Half
   the threshold because at 0.2 SmolLM2's candidates that move the controls sit just under it
   (0.19–0.2 of the control's max; docs/knowledge.md has both settings' figures);
4. knowledge neurons: coarse on at least `sharing_ratio` of the prompts, among those the filter left;
   `"adaptive"` starts at 0.7 and moves by 0.05 until the count lands in `target_count` ([2, 5]), as
   the paper describes (after the filter, so the range holds for what is returned); the dropped
   candidates at that ratio are reported (`filtered_neurons`, with the controls they fire for);
5. their effect: the answer's probability with them suppressed (activation set to 0) and enhanced
   (× `enhance_factor`, 2) at the answer-predicting positions, as the paper's Fig. 3 / 4; the same
   on `control_prompts` (their own top-1 next token), and with as many random neurons of the same
   layers suppressed, the control the paper's "knowledge-specific" claim needs.

Where this differs: the model is causal (the paper's BERT reads a [MASK]); the IG path covers all
layers in one batched pass with a shared KV cache (the reference runs one layer at a time); the
contrast filter (step 3) is ours. It costs one IG pass per control prompt (the built-in ones: once
per worker), and the effect on the controls that filtered is in-sample: hold some out to measure
locality (docs/knowledge.md). Without controls the located neurons are not specific (they move
unrelated facts: docs/knowledge.md); the built-in set is what makes the default specific.

Steps 1-4 (`locate`, `refine`, the control-score cache) and the answer read-out live in
`workers/knowledge/neurons.py`: `knowledge_edit` locates the same way, and a method never imports another.
"""

from __future__ import annotations

import random

from schemas.kinds.knowledge_neurons import (
    KnowledgeNeuronsJob,
    KnowledgeNeuronsParams,
    KnowledgeNeuronsResult,
    Neuron,
    PromptEffect,
)
from workers.context import Context
from workers.internals.ffn import n_neurons, scale_deltas
from workers.knowledge.control_facts import CONTROL_PROMPTS
from workers.knowledge.neurons import answer_prob, encode_answer, encode_prompts, locate, next_token
from workers.models.loading import LM


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


def run(lm: LM, job: KnowledgeNeuronsJob, ctx: Context) -> KnowledgeNeuronsResult:
    progress, limits = ctx.progress, ctx.limits
    params: KnowledgeNeuronsParams = job.params
    prompts = encode_prompts(lm, job.input.prompts, limits, "prompts")
    control_texts, control_set = list(job.input.control_prompts), "input"
    if not control_texts and params.builtin_controls and params.filter_controls:
        control_texts, control_set = list(CONTROL_PROMPTS), "builtin"
    controls = encode_prompts(lm, control_texts, limits, "control_prompts")
    answer = encode_answer(lm, job.input.answer)
    located = locate(lm, prompts, answer, params, progress, (0.0, 0.9), controls,
                     cache_controls=control_set == "builtin")
    pairs = [(n.layer, n.index) for n in located.neurons]
    suppress = scale_deltas(lm, pairs, 0.0) if pairs else []
    enhance = scale_deltas(lm, pairs, params.enhance_factor) if pairs else []
    rand = random_neurons(lm, located.neurons, params.seed) if params.random_baseline and pairs else None
    rand_suppress = scale_deltas(lm, [(n.layer, n.index) for n in rand], 0.0) if rand else None

    effects = []
    for text, ids in zip(job.input.prompts, prompts):
        effects.append(PromptEffect(
            prompt=text, prob=answer_prob(lm, ids, answer), suppressed=answer_prob(lm, ids, answer, suppress),
            enhanced=answer_prob(lm, ids, answer, enhance),
            random_suppressed=answer_prob(lm, ids, answer, rand_suppress) if rand_suppress else None))
    control_effects = []
    for text, ids in zip(control_texts, controls):
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
    return KnowledgeNeuronsResult(provenance=ctx.provenance(lm, job), 
        answer_tokens=lm.token_strings(answer), neurons=located.neurons, sharing_ratio=located.sharing_ratio,
        coarse_counts=located.coarse_counts, filtered_neurons=located.filtered, filtered_count=located.filtered_count,
        random_neurons=rand, control_set=control_set if control_texts else None, prompts=effects,
        controls=control_effects,
        summary=summary)
