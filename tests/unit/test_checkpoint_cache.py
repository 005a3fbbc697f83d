"""The worker's checkpoint LRU (workers/models/checkpoints.py): it loads the weights the registry names,
never holds more than its budget (measured on the modules it holds), evicts the least recently used,
keeps the base model resident, and a run over more checkpoints than fit still finishes."""

from __future__ import annotations

import pytest
import torch

from schemas.models import ModelSpec
from tests.tiny import tokenizer
from workers import metrics, tasks
from workers.errors import BadInput
from workers.internals.hooks import hook_count
from workers.models.checkpoints import CheckpointCache, module_bytes, step_of
from workers.models.loading import wrap

STEPS = [0, 1, 3, 10, 30]


def _tiny(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer("bpe")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny LLaMA whose registry entry lists 5 checkpoints: 4 HF folders and 1 safetensors file,
    each with different weights (seed = step + 1)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("ckpts")
    specs = []
    for step in STEPS:
        model = _tiny(step + 1)
        if step == 3:
            path = root / "step-3.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
            specs.append({"step": step, "source": "file", "path": str(path)})
        else:
            model.save_pretrained(root / f"step-{step}")
            specs.append({"step": step, "source": "dir", "path": str(root / f"step-{step}")})
    spec = ModelSpec(id="tiny-ckpt", path="-", checkpoints=specs)
    return wrap(spec, _tiny(1000), tokenizer("bpe"))


def held_bytes(cache: CheckpointCache) -> int:
    """Measured independently of the cache's own bookkeeping: the bytes of every tensor of every model held."""
    return sum(t.numel() * t.element_size() for lm, _ in cache._entries.values()
               for t in [*lm.model.parameters(), *lm.model.buffers()])


def test_loads_the_weights_of_the_named_step(base):
    cache = CheckpointCache(budget_bytes=10 * module_bytes(base.model))
    for step in STEPS:
        lm = cache.get(base, step)
        expected = _tiny(step + 1).state_dict()
        got = lm.model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), step
        assert step_of(lm) == step and lm.id == base.id and lm.tokenizer is base.tokenizer
        assert not lm.model.training and not any(p.requires_grad for p in lm.model.parameters())
    assert step_of(base) is None
    assert cache.get(base, 10) is cache.get(base, 10)  # a hit: the same object, not a reload
    assert cache.loads == len(STEPS)


def test_never_over_budget_and_evicts_the_least_recently_used(base):
    size = module_bytes(base.model)
    budget = 2 * size + size // 2  # room for two checkpoints
    cache = CheckpointCache(budget_bytes=budget)
    base_weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    loads_before = metrics.CHECKPOINT_LOAD.labels(base.id)._sum.get()
    order = [0, 1, 0, 3, 10, 0, 30, 1, 1, 3]
    for step in order:
        cache.get(base, step)
        assert held_bytes(cache) == cache.bytes <= budget
        assert len(cache.keys()) <= 2
    # 0 1 | 0 (hit) | 3 evicts 1 | 10 evicts 0 | 0 evicts 3 | 30 evicts 10 | 1 evicts 0 | 1 (hit) | 3 evicts 30
    assert cache.keys() == [(base.id, 1), (base.id, 3)]
    assert cache.loads == 8
    assert metrics.CHECKPOINT_LOAD.labels(base.id)._sum.get() > loads_before
    assert all(torch.equal(v, base_weights[k]) for k, v in base.model.state_dict().items())  # base untouched


def test_a_checkpoint_over_the_whole_budget_is_served_but_not_kept(base):
    cache = CheckpointCache(budget_bytes=module_bytes(base.model) // 2)
    lm = cache.get(base, 1)
    assert step_of(lm) == 1 and cache.keys() == [] and cache.bytes == 0


def test_an_unknown_step_is_bad_input(base):
    with pytest.raises(BadInput, match="no checkpoint at step 2"):
        CheckpointCache(budget_bytes=1 << 30).get(base, 2)


def test_a_run_over_more_checkpoints_than_fit_finishes(base, monkeypatch):
    """Every step's job runs through the worker's `_run`; the cache holds two at a time."""
    size = module_bytes(base.model)
    cache = CheckpointCache(budget_bytes=2 * size + size // 2)
    monkeypatch.setattr(tasks, "CHECKPOINTS", cache)
    monkeypatch.setitem(tasks.MODELS, base.id, base)
    results = {}
    for step in [*STEPS, None]:
        payload = {"kind": "logit_lens", "model": base.id, "input": {"prompt": "The capital of France is"},
                   "params": {"layers": [1], "top_k": 1}}
        if step is not None:
            payload["checkpoint"] = step
        out = tasks._run(None, payload)
        assert out["provenance"]["checkpoint"] == step
        results[step] = out
        assert held_bytes(cache) <= cache.budget_bytes
    assert cache.loads == len(STEPS) and len(cache.keys()) == 2
    # different weights, different answers: each job really ran on its own step
    tops = {s: str(r["layers"]) for s, r in results.items()}
    assert len(set(tops.values())) > 1


def test_a_hook_left_on_a_checkpoint_is_removed_and_counted(base, monkeypatch, tmp_path):
    """run_job's last line (remove and count leftover hooks) covers the checkpoint a job ran on."""
    from types import SimpleNamespace

    from workers import registry

    cache = CheckpointCache(budget_bytes=10 * module_bytes(base.model))
    monkeypatch.setattr(tasks, "CHECKPOINTS", cache)
    monkeypatch.setitem(tasks.MODELS, base.id, base)
    real = registry.REGISTRY["logit_lens"]

    def leaky(lm, job, ctx):
        lm.layers[0].register_forward_hook(lambda m, a, o: None)
        return real.run(lm, job, ctx)

    monkeypatch.setitem(registry.REGISTRY, "logit_lens", SimpleNamespace(run=leaky))
    monkeypatch.setattr(tasks, "REGISTRY", registry.REGISTRY)
    before = metrics.LEFTOVER_HOOKS._value.get()
    payload = {"kind": "logit_lens", "model": base.id, "input": {"prompt": "Hello world"},
               "params": {"layers": [1], "top_k": 1}}
    for step in (1, 1):  # loaded in the first job, cached for the second
        out = tasks.run_job({**payload, "checkpoint": step})
        assert out["provenance"]["checkpoint"] == 1
        assert hook_count(cache.get(base, 1).model) == 0
    assert metrics.LEFTOVER_HOOKS._value.get() == before + 2
