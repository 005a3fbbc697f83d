"""Lantern's knowledge-neuron scores against the published `knowledge-neurons` package (EleutherAI,
0.0.2) on the bundled SmolLM2-135M. The package supports BERT/GPT-2/GPT-Neo by attribute paths;
pointed at the LLaMA modules (bench/bench_knowledge_peers.py `LLAMA_PATHS`: it scales `mlp.act_fn`'s
output, which scales the gated MLP's neuron activation act(gate)·up by the same α and gives the same
score), it must find what Lantern finds. Its IG is a uniform-weight sum over linspace(0, 1, steps);
Lantern's closest rule (`riemann_trapezoid`, the same points, half weight at the ends) differs by
that quadrature only, so the check is correlation and a bounded difference, not equality. Three
layers of one prompt keep it to seconds; bench/bench_knowledge_peers.py runs the whole comparison.

The package is installed by the Makefile (`$(VENV)/.peers-installed`, --no-deps); without it these
tests skip and say so."""

from __future__ import annotations

import pytest

pytest.importorskip("knowledge_neurons", reason="peers not installed: make .venv/.peers-installed")

import torch  # noqa: E402

from bench.bench_knowledge_peers import BATCH, STEPS, THRESHOLD, package, pearson  # noqa: E402

PROMPT, ANSWER = "The capital of France is", " Paris"
LAYERS = [0, 15, 29]


def test_package_on_llama_paths_matches_lantern(smollm2):
    from workers.internals.ffn import fact_attributions
    from workers.knowledge.neurons import encode_answer

    kn = package(smollm2)
    theirs = torch.stack([kn.get_scores_for_layer(PROMPT, ANSWER, layer_idx=layer, batch_size=BATCH, steps=STEPS)
                          .detach().float() for layer in LAYERS])  # (3, inter)
    ours = fact_attributions(smollm2, smollm2.encode(PROMPT).ids, encode_answer(smollm2, ANSWER), STEPS,
                             "riemann_trapezoid", LAYERS)[LAYERS].float()
    assert ours.shape == theirs.shape == (3, 1536)
    assert pearson(ours, theirs) > 0.999
    assert (ours - theirs).abs().max() <= 0.1 * theirs.abs().max()  # the quadratures' endpoint weights
    top = lambda s: set(map(tuple, (s > THRESHOLD * s.max()).nonzero().tolist()))  # noqa: E731
    assert top(ours) and top(ours) == top(theirs)
    # the package left the model as it found it (its patches replace modules of its own copy)
    assert type(kn.model.model.layers[0].mlp.act_fn).__name__ != "Patch"
