"""Method tests on the bundled models (SmolLM2), moved out of the unit tests: each loads the real
model once per session (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

from schemas.jobs import parse_job
from schemas.kinds.knowledge_neurons import KnowledgeNeuronsInput, KnowledgeNeuronsParams
from tests.unit.test_knowledge_neurons import Request
from workers.context import Context
from workers.internals.hooks import hook_count
from workers.methods import generate
from workers.methods import knowledge_neurons as kn


def test_messages_use_the_chat_template(smollm2):
    req = parse_job({"kind": "generate", "model": "smollm2-135m",
                     "input": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
                     "params": {"max_new_tokens": 8}})
    res = generate.run(smollm2, req, Context())
    assert res.prompt_tokens > 10  # the template's system turn and markers
    assert "Paris" in res.text


@pytest.mark.slow
def test_smollm2_default_neurons_are_specific_on_a_held_out_fact(smollm2):
    """Issue 10 item 2 on the real model, default parameters and no control_prompts (the built-in control
    facts filter): a held-out fact of bench/bench_knowledge.py (never used to choose the controls) loses at
    least 25% of its answer's probability when its neurons are suppressed, and the held-out unrelated facts
    move by at most 5% on average (|relative change| of their own top-1 token)."""
    from bench.bench_knowledge import HELD, HELD_UNRELATED, unrelated_changes

    answer, prompts = HELD[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; one thread is also what the figures were measured with
    try:
        res = kn.run(smollm2, Request(KnowledgeNeuronsInput(prompts=prompts, answer=answer),
                                      KnowledgeNeuronsParams()), Context())
    finally:
        torch.set_num_threads(threads)
    assert res.control_set == "builtin" and res.neurons
    assert res.summary["suppressed"] <= -0.25
    changes = unrelated_changes(smollm2, res.neurons, HELD_UNRELATED)
    assert sum(abs(c) for c in changes) / len(changes) <= 0.05
    assert hook_count(smollm2.model) == 0


@pytest.mark.slow
def test_smollm2_located_neurons_beat_random(smollm2):
    """Suppressing located neurons lowers the answer clearly more than as many random ones of the same layers;
    with the capital of Japan as a control, the filter drops the shared "capital of" neurons, and Tokyo
    survives the suppression that wipes it out without the filter."""
    def locate(controls: list[str], **params):
        req = Request(KnowledgeNeuronsInput(prompts=["The capital of France is", "France's capital city is"],
                                            answer=" Paris", control_prompts=controls),
                      KnowledgeNeuronsParams(n_steps=4, layers=list(range(20, 30)), **params))
        return kn.run(smollm2, req, Context())

    res = locate(["Water is made of hydrogen and"])
    assert 1 <= len(res.neurons) <= 32
    assert res.summary["suppressed"] < -0.3
    assert res.summary["random_suppressed"] > -0.1
    assert res.summary["suppressed"] < res.summary["random_suppressed"] - 0.25
    off, on = locate(["The capital of Japan is"], filter_controls=False), locate(["The capital of Japan is"])
    assert off.controls[0].top1_token == " Tokyo" and off.filtered_neurons is None
    assert off.controls[0].suppressed < 0.2 * off.controls[0].prob
    assert on.filtered_count >= 1 and on.controls[0].suppressed > 0.8 * on.controls[0].prob
    assert not {(n.layer, n.index) for n in on.neurons} & {(n.layer, n.index) for n in on.filtered_neurons}
    assert on.summary["suppressed"] < on.summary["random_suppressed"] - 0.1
    assert hook_count(smollm2.model) == 0
