"""The built-in control facts of `knowledge_neurons`: what its contrast filter compares against when
the caller brings no `control_prompts` (`params.builtin_controls`, on by default).

Why: located without controls, a fact's knowledge neurons include neurons that many predictions
share (output neurons of the last layers, a layer-0 neuron that fires on most prompts); suppressing
them moved unrelated facts (docs/knowledge.md). The filter drops a
candidate that also matters for a control fact's own top-1 token, so a small set of facts from
unrelated domains removes those shared neurons and leaves the fact's own.

Where they come from: written for this purpose (not taken from a data set), eight short
common-knowledge cloze prompts, each from a different relation (astronomy, geometry, colours,
antonyms, time units, inventions, history, anatomy), none sharing a relation with the facts that
docs/knowledge.md measures on; each continuation was checked to be SmolLM2-135M-Instruct's top-1
next token (the filter uses the model's own top-1 token, so another model works too). Eight,
because each costs one IG pass the first time a worker
needs it; the scores are then cached per model and IG settings (`workers.methods.knowledge_neurons`).
The choice was tuned on the tuning facts of bench/bench_knowledge.py only (`TUNE`, `TUNE_UNRELATED`);
the figures in docs/knowledge.md are on its held-out facts.
"""

from __future__ import annotations

# (prompt, the answer SmolLM2-135M-Instruct gives as its top-1 next token)
CONTROL_FACTS: tuple[tuple[str, str], ...] = (
    ("The moon orbits the", " Earth"),
    ("A triangle has three", " sides"),
    ("The primary colors are red, yellow and", " blue"),
    ("The opposite of hot is", " cold"),
    ("A week has seven", " days"),
    ("Thomas Edison invented the light", " bulb"),
    ("The first president of the United States was George", " Washington"),
    ("The heart pumps", " blood"),
)

CONTROL_PROMPTS: tuple[str, ...] = tuple(p for p, _ in CONTROL_FACTS)
