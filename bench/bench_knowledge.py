"""Knowledge neurons on SmolLM2-135M: the located-vs-random figures.

- figures (docs/knowledge.md): for each fact, without and with the control filter, the answer's
  probability with the located neurons suppressed, with as many random neurons of the same layers
  suppressed, on control facts (the other facts' first prompts, which the filter uses) and on held-out
  controls (which it does not), as mean relative changes; and the `update` edit's scores.

The locate time against the published knowledge-neurons package, whole, is
bench/bench_knowledge_peers.py (the in-house re-implementation of the reference code that was timed
here, on 6 of 30 layers and extrapolated, is gone).

`python -m bench.run knowledge` writes the section; both runs use fp32 on the same device.
`specificity` (`python -m bench.run knowledge_specificity`, its own section) measures the default
(no control prompts: the built-in control facts) on held-out facts, with the tuning/held-out split below.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch

FACTS = [
    (" Paris", ["The capital of France is", "France's capital city is", "The capital city of France is"]),
    (" Au", ["The chemical symbol for gold is", "Gold's chemical symbol is", "In chemistry, the symbol for gold is"]),
    (" Jupiter", ["The largest planet in the solar system is", "The biggest planet in our solar system is",
                  "The solar system's largest planet is"]),
    (" oxygen", ["Water is made of hydrogen and", "Water molecules consist of hydrogen and",
                 "H2O is made of two atoms of hydrogen and one atom of"]),
    (" Tokyo", ["The capital of Japan is", "Japan's capital city is", "The capital city of Japan is"]),
]


# Specificity of the default (issue 10 item 2): the built-in control facts (workers/knowledge/control_facts.py) were
# chosen on TUNE (= FACTS) and TUNE_UNRELATED only; the figures are on HELD facts and HELD_UNRELATED facts, none
# of which any choice looked at. Unrelated facts are of other relations than every fact they are measured
# against and than the built-in controls; each prompt's model answer is its top-1 next token.
TUNE = FACTS
TUNE_UNRELATED = ["One, two, three, four,", "Spiders have eight", "Apples are a type of",
                  "The Statue of Liberty is in New York", "Dogs are man's best"]
HELD = [
    (" Everest", ["The tallest mountain in the world is Mount", "The highest mountain on Earth is Mount",
                  "The world's tallest mountain is Mount"]),
    (" Shakespeare", ["Romeo and Juliet was written by William", "The play Romeo and Juliet was written by William",
                      "The author of Hamlet is William"]),
    (" Celsius", ["The freezing point of water is zero degrees", "Water freezes at zero degrees",
                  "Water freezes at 0 degrees"]),
    (" Pacific", ["The largest ocean on Earth is the", "The largest ocean in the world is the",
                  "Earth's largest ocean is the"]),
    (" Berlin", ["The capital of Germany is", "The capital city of Germany is", "Germany's capital city is"]),
]
HELD_UNRELATED = ["The Mona Lisa was painted by Leonardo da", "The chemical symbol for iron is",
                  "The inventor of the telephone was Alexander Graham", "The Amazon rainforest is in South",
                  "An octopus has eight", "The Beatles were a band from"]


def unrelated_changes(lm, neurons, prompts: list[str]) -> list[float]:
    """Relative change of each prompt's own top-1 next token's probability with the neurons suppressed."""
    from workers.internals.ffn import scale_deltas
    from workers.knowledge.neurons import answer_prob, next_token

    deltas = scale_deltas(lm, [(n.layer, n.index) for n in neurons], 0.0) if neurons else []
    out = []
    for text in prompts:
        ids = lm.encode(text).ids
        top = [next_token(lm, ids)]
        out.append(answer_prob(lm, ids, top, deltas) / answer_prob(lm, ids, top) - 1.0)
    return out


def specificity_rows(lm, facts, unrelated, settings=(("builtin controls (default)", {}),
                                                     ("no controls", {"builtin_controls": False}))):
    """Per fact and setting: (answer, label, neuron count, located suppressed (mean over the paraphrases),
    mean |change| of the unrelated facts, their largest |change|, random suppressed). Default parameters,
    no control_prompts."""
    from schemas.kinds.knowledge_neurons import KnowledgeNeuronsInput, KnowledgeNeuronsParams
    from tests.unit.test_knowledge_neurons import Request
    from workers.context import Context
    from workers.methods import knowledge_neurons

    rows = []
    for answer, prompts in facts:
        for label, setting in settings:
            res = knowledge_neurons.run(lm, Request(KnowledgeNeuronsInput(prompts=prompts, answer=answer),
                                                    KnowledgeNeuronsParams(**setting)), Context())
            ch = [abs(c) for c in unrelated_changes(lm, res.neurons, unrelated)]
            rows.append((answer, label, len(res.neurons), res.summary["suppressed"], statistics.mean(ch), max(ch),
                         res.summary.get("random_suppressed", 0.0)))
    return rows


def specificity_table(rows) -> str:
    lines = ["| fact | controls | neurons | fact suppressed | unrelated: mean \|change\| | unrelated: largest "
             "\|change\| | random suppressed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for answer, label, n, drop, mean_ch, max_ch, rnd in rows:
        lines.append(f"| →{answer} | {label} | {n} | {drop:+.0%} | {mean_ch:.1%} | {max_ch:.0%} | {rnd:+.0%} |")
    for label in dict.fromkeys(r[1] for r in rows):
        sel = [r for r in rows if r[1] == label]
        lines.append(f"| **mean of {len(sel)} facts** | {label} | {statistics.mean(r[2] for r in sel):.1f} | "
                     f"**{statistics.mean(r[3] for r in sel):+.0%}** | **{statistics.mean(r[4] for r in sel):.1%}** | "
                     f"{max(r[5] for r in sel):.0%} | {statistics.mean(r[6] for r in sel):+.0%} |")
    return "\n".join(lines)


def specificity(lm) -> str:
    """The held-out figures (and, below them, the tuning set's), default parameters, with and without the
    built-in controls; IG is shared between the two settings (`memoized_ig`)."""
    from workers.knowledge.control_facts import CONTROL_PROMPTS

    ig_times: list[float] = []
    t = time.perf_counter()
    with memoized_ig(ig_times):
        held = specificity_rows(lm, HELD, HELD_UNRELATED)
        tune = specificity_rows(lm, TUNE, TUNE_UNRELATED)
    return ("Default parameters (3 paraphrases, all 30 layers, 20 steps, threshold 0.2, adaptive sharing, "
            "contrast_threshold 0.1, contrast_ratio 0.1), no `control_prompts`: with the built-in control facts "
            f"({len(CONTROL_PROMPTS)}: " + ", ".join(f'"{p}"' for p in CONTROL_PROMPTS) + ") and without them "
            "(`builtin_controls: false`, the old default). \"fact suppressed\": mean relative change of the "
            "answer's probability over the paraphrases with the located neurons set to 0; \"unrelated\": the "
            "relative change of each unrelated fact's own top-1 token, |·| averaged (and the largest) over "
            "the unrelated facts; \"random\": as many random neurons of the same layers.\n\n"
            "**Held out** (no choice looked at these): facts " + ", ".join(f"→{a}" for a, _ in HELD)
            + "; unrelated facts " + ", ".join(f'"{p}"' for p in HELD_UNRELATED) + ".\n\n" + specificity_table(held)
            + "\n\nTuning set (the built-in controls and the filter's settings were chosen on these): facts "
            + ", ".join(f"→{a}" for a, _ in TUNE) + "; unrelated facts " + ", ".join(f'"{p}"' for p in TUNE_UNRELATED)
            + ".\n\n" + specificity_table(tune)
            + f"\n\nOne IG pass (one prompt, 30 layers, 20 steps): {statistics.mean(ig_times):.1f} s here, one "
            f"thread on a 2-core machine shared with other work (4.2 s on a quiet one); the built-in controls "
            f"cost {len(CONTROL_PROMPTS)} passes once per worker and IG settings, later jobs reuse them. "
            f"This section took {time.perf_counter() - t:.0f} s.")


def load():
    from common.registry import load_registry
    from workers.models.loading import load_model

    spec = load_registry()["smollm2-135m"].model_copy(update={"dtype": "float32"})
    return load_model(spec)


# the control filter: off, on at the fact's threshold (0.2), on at the default (0.1)
SETTINGS = [("off", {"filter_controls": False}), ("on, 0.2", {"contrast_threshold": 0.2}), ("on, 0.1", {})]
# controls that no run filters with: the located neurons' effect on these is out of sample
HELD_OUT = ["The capital of Italy is", "The opposite of hot is", "The color of the sky is", "Two plus two equals"]


@contextmanager
def memoized_ig(stats: list[float]):
    """The same (prompt, target, steps, rule, layers) gives the same IG scores, so the runs with and without
    the control filter share them: each is computed once (its time appended to `stats`)."""
    from workers.knowledge import neurons  # where the locate step calls it (workers/internals/ffn.py holds it)

    real, cache = neurons.fact_attributions, {}

    def fact_attributions(lm, ids, target, n_steps, rule, layers=None, progress=None):
        key = (tuple(ids), tuple(target), n_steps, rule, tuple(layers) if layers else None)
        if key not in cache:
            t = time.perf_counter()
            cache[key] = real(lm, ids, target, n_steps, rule, layers)
            stats.append(time.perf_counter() - t)
        return cache[key]

    neurons.fact_attributions = fact_attributions
    try:
        yield
    finally:
        neurons.fact_attributions = real


def held_out_suppressed(lm, neurons) -> float:
    """Mean relative change of each HELD_OUT prompt's own top-1 token with the neurons suppressed."""
    from workers.internals.ffn import scale_deltas
    from workers.knowledge.neurons import answer_prob, next_token

    deltas = scale_deltas(lm, [(n.layer, n.index) for n in neurons], 0.0) if neurons else []
    changes = []
    for text in HELD_OUT:
        ids = lm.encode(text).ids
        top = [next_token(lm, ids)]
        changes.append(answer_prob(lm, ids, top, deltas) / answer_prob(lm, ids, top) - 1.0)
    return statistics.mean(changes)


def figures(lm) -> tuple[str, float]:
    """The located-vs-random table and the update edit, each without and with the control filter; and the
    mean time of one IG pass (one prompt, all layers, 20 steps), which is what the filter adds per control."""
    from schemas.kinds.knowledge_edit import KnowledgeEditInput, KnowledgeEditParams
    from schemas.kinds.knowledge_neurons import KnowledgeNeuronsInput, KnowledgeNeuronsParams
    from tests.unit.test_knowledge_neurons import Request
    from workers.context import Context
    from workers.interventions.edits import from_data
    from workers.methods import knowledge_edit, knowledge_neurons

    class MemoryStore:  # the benchmark keeps no artifacts; the last edit's deltas stay readable
        data: dict = {}

        def put(self, kind, model, data):
            from types import SimpleNamespace
            MemoryStore.data = data
            return SimpleNamespace(id="ed_" + "0" * 32)

    ig_times: list[float] = []
    lines = ["| fact | p(answer) | filter | located neurons (layers) | dropped by the filter | located suppressed | "
             "random suppressed | controls suppressed | held-out controls suppressed | enhanced |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    with memoized_ig(ig_times):
        for k, (answer, prompts) in enumerate(FACTS):
            controls = [p[0] for j, (_, p) in enumerate(FACTS) if j != k]
            for label, setting in SETTINGS:
                res = knowledge_neurons.run(lm, Request(
                    KnowledgeNeuronsInput(prompts=prompts, answer=answer, control_prompts=controls),
                    KnowledgeNeuronsParams(**setting)), Context())
                s = res.summary
                layers = sorted({n.layer for n in res.neurons})
                p = statistics.mean(e.prob for e in res.prompts)
                dropped_layers = ", ".join(map(str, sorted({n.layer for n in res.filtered_neurons or []})))
                dropped = (f"{res.filtered_count} ({dropped_layers})" if res.filtered_count else "0") \
                    if res.filtered_neurons is not None else "—"
                lines.append(
                    f"| {prompts[0]} →{answer} | {p:.2f} | {label} | {len(res.neurons)} "
                    f"({', '.join(map(str, layers))}) | {dropped} | {s['suppressed']:+.0%} | "
                    f"{s.get('random_suppressed', 0):+.0%} | {s.get('control_suppressed', 0):+.0%} | "
                    f"{held_out_suppressed(lm, res.neurons):+.0%} | {s['enhanced']:+.0%} |")
        # update France -> Rome with the located neurons, held-out paraphrase, unrelated controls
        answer, prompts = FACTS[0]
        upd = ["", "", "`knowledge_edit` update France → Rome (λ = 0.5, located on 2 prompts, the third held out; "
               "controls: the gold, planet and water prompts; locality tolerance 0.05):", ""]
        for label, setting in SETTINGS:
            edit = knowledge_edit.run(lm, Request(
                KnowledgeEditInput(prompts=prompts[:2], paraphrases=prompts[2:], answer=answer, new_answer=" Rome",
                                   control_prompts=[p[0] for _, p in FACTS[1:4]]),
                KnowledgeEditParams(operation="update", **setting)), Context(store=MemoryStore()))
            deltas = from_data(lm, MemoryStore.data["deltas"])
            held = knowledge_edit.locality(lm, HELD_OUT, [lm.encode(t).ids for t in HELD_OUT], deltas, 0.05)
            upd.append(
                f"- filter {label}: {len(edit.neurons)} neurons (layers "
                f"{', '.join(map(str, sorted({n.layer for n in edit.neurons})))}"
                + (f"; {edit.filtered_count} dropped" if edit.filtered_neurons is not None else "") + "): "
                f"reliability {edit.reliability.score:.2f} (p(Rome) {edit.reliability.new_prob_before:.3f} → "
                f"{edit.reliability.new_prob_after:.2f}), generalization {edit.generalization.score:.2f}, "
                f"locality {edit.locality.score:.2f} ("
                + ", ".join(f"{r.top1_before.strip()} {r.prob_before:.2f}→{r.prob_after:.2f}"
                            + (f" (top-1 {r.top1_after.strip()})" if r.top1_after != r.top1_before else "")
                            for r in edit.locality.prompts)
                + f"), held-out locality {held.score:.2f} ("
                + ", ".join(f"{r.top1_before.strip()} {r.prob_before:.2f}→{r.prob_after:.2f}"
                            + (f" (top-1 {r.top1_after.strip()})" if r.top1_after != r.top1_before else "")
                            for r in held.prompts)
                + ")")
    return "\n".join(lines) + "\n".join(upd), statistics.mean(ig_times)


def run() -> str:
    # one thread: on a shared 2-core machine two OpenMP threads spin on each other (bench_perturbation)
    torch.set_num_threads(1)
    lm = load()
    fig, ig_pass = figures(lm)
    return ("## Knowledge neurons (SmolLM2-135M, fp32)\n\n" + "Located vs random neurons "
            "(3 paraphrases per fact, all layers, 20 steps, threshold 0.2, adaptive sharing; mean relative "
            "change of the answer's probability), without the control filter and with it (`filter_controls`, "
            "contrast_ratio 0.1: drop a candidate whose score is over `contrast_threshold` (0.2 or 0.1, the "
            "default) × max on any of the 4 controls, the other facts' first prompts). Held-out controls: "
            + ", ".join(f"\"{t}\"" for t in HELD_OUT) + ", used by no filter.\n\n"
            + fig + f"\n\nThe filter's cost: one IG pass per control prompt, {ig_pass:.1f} s each here (one prompt, "
            "30 layers, 20 steps; mean over the passes above), i.e. 4 controls add 4/3 of a 3-paraphrase locate.\n")


if __name__ == "__main__":
    print(run())
