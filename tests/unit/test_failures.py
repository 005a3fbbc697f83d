"""A job whose method raises ends `failed` and leaves nothing behind on the shared model: no hook
(even one a buggy method registered by hand and never removed), no changed weight; the worker
process goes on. (workers/tasks.py's clean-up, checked on a tiny LLaMA, no Redis.)"""

from __future__ import annotations

import pytest
import torch

from workers import tasks
from workers.internals.hooks import capture_outputs, hook_count
from workers.registry import REGISTRY


def test_a_raising_method_leaves_no_hook_and_no_weight_change(tiny_llama, monkeypatch):
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    own = hook_count(tiny_llama.model)  # transformers' own output-capturing hooks, if any are installed

    def buggy(lm, job, ctx):
        lm.model.model.layers[0].mlp.register_forward_hook(lambda m, a, o: o * 0)  # leaked on purpose
        with capture_outputs({"l1": lm.model.model.layers[1]}):
            lm.model(torch.tensor([[1, 2, 3]]))  # a forward with the leaked hook and the capture in place
            raise RuntimeError("boom in the middle of a job")

    monkeypatch.setitem(tasks.MODELS, "tiny-llama", tiny_llama)
    monkeypatch.setitem(REGISTRY, "generate", REGISTRY["generate"]._replace(run=buggy))
    payload = {"kind": "generate", "model": "tiny-llama", "input": {"prompt": "Hello world"}}
    with pytest.raises(RuntimeError, match="boom"):
        tasks.run_job(payload)
    assert hook_count(tiny_llama.model) == own
    after = tiny_llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    monkeypatch.setitem(REGISTRY, "generate", REGISTRY["generate"])  # the next job on the same model runs clean
    monkeypatch.undo()
    monkeypatch.setitem(tasks.MODELS, "tiny-llama", tiny_llama)
    out = tasks.run_job({**payload, "params": {"max_new_tokens": 2}})
    assert out["tokens"] and hook_count(tiny_llama.model) == own
