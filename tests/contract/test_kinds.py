"""The contract every kind keeps, driven by the registry (the way Captum's test config makes a new
algorithm tested by adding it): for every kind in `workers.registry.REGISTRY`, a default job on a tiny
model runs through the worker's own entry (`workers.tasks.run_job`, performed as an RQ job on a real
Redis, so artifact kinds store their profile or edit set as in production), and

- its result validates against the kind's result schema (`schemas.jobs.KINDS[kind].result`),
- it carries provenance (the worker stamps it: model, kind, params after defaults, versions),
- it leaves no hook on any module of the shared model (the method itself: the worker would remove a
  leftover and count it in `lantern_leftover_hooks_total`, so that counter must not move either),
- it leaves every weight bit-identical (`torch.equal` on every state_dict tensor).

The job is the kind's example request (`schemas/examples.py`, the one the OpenAPI document and the
explorer show) on a tiny model: `tiny_llama` (LLaMA with GQA), or `tiny_bert` where the example's model is
an encoder; layer indices are folded into the tiny model's range. Adding a kind (a registry line and an
example) adds it here with no new test code. A kind whose example cannot run on a tiny model gets its
input in `TINY_OVERRIDES` (with the reason), never a skip.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from redis import Redis
from rq.job import Job

from common.registry import load_registry
from schemas.examples import EXAMPLES
from schemas.jobs import KINDS
from workers import metrics, tasks
from workers.internals.hooks import hook_count
from workers.registry import REGISTRY

# kind -> parts of the request replaced on the tiny model, and why.
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    # The answer is read from each label word's first token; in the tiny tokenizer " positive" and
    # " negative" both start with " " (no merges), so the tiny job uses two single-token words.
    "icl_anchors": {"input": {**EXAMPLES["icl_anchors"]["input"], "label_words": {"positive": "Mary", "negative": "John"}}},
    # The IOI generator draws names from a list of names that are single tokens of the real models'
    # vocabularies; the tiny tokenizer (320 BPE tokens) has only " Mary" and " John" as single-token
    # names, so the job names its labelled pairs (positions: io, s1, s2, end of the clean prompt).
    "circuit": {"input": {"pairs": [
        {"clean_prompt": "When Mary and John went to the store, John gave a drink to",
         "corrupted_prompt": "When John and Mary went to the store, Mary gave a drink to",
         "answer": " Mary", "wrong_answer": " John", "positions": {"io": 2, "s1": 5, "s2": 15, "end": 21}},
        {"clean_prompt": "When John and Mary went to the store, Mary gave a drink to",
         "corrupted_prompt": "When Mary and John went to the store, John gave a drink to",
         "answer": " John", "wrong_answer": " Mary", "positions": {"io": 2, "s1": 5, "s2": 15, "end": 21}},
    ]}},
}


def _fold_layers(value: Any, n_layers: int) -> Any:
    """Every `layers` list in the request, folded into the tiny model's layer range (order kept, deduplicated)."""
    if isinstance(value, dict):
        return {k: (list(dict.fromkeys(min(i, n_layers - 1) for i in v)) if k == "layers" and isinstance(v, list)
                    else _fold_layers(v, n_layers)) for k, v in value.items()}
    if isinstance(value, list):
        return [_fold_layers(v, n_layers) for v in value]
    return value


def tiny_job(kind: str, lm) -> dict[str, Any]:
    example = copy.deepcopy(EXAMPLES[kind])
    job = {**_fold_layers(example, len(lm.layers)), **TINY_OVERRIDES.get(kind, {}), "model": lm.id}
    job.pop("webhook", None)
    return job


@pytest.fixture(scope="module")
def connection(redis_url):
    return Redis.from_url(redis_url)


def test_every_kind_has_an_example_and_a_schema():
    assert set(REGISTRY) == set(KINDS) <= set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_a_default_job_keeps_the_contract(kind, request, connection, monkeypatch):
    encoder = load_registry()[EXAMPLES[kind]["model"]].task == "encoder"
    lm = request.getfixturevalue("tiny_bert" if encoder else "tiny_llama")
    assert lm.spec.task in KINDS[kind].tasks
    monkeypatch.setitem(tasks.MODELS, lm.id, lm)
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    hooks = hook_count(lm.model)
    leftovers = metrics.LEFTOVER_HOOKS._value.get()

    payload = tiny_job(kind, lm)
    job = Job.create("workers.tasks.run_job", args=[payload], connection=connection, meta={"owner": "contract"})
    job.save()
    out = job.perform()  # the worker's entry, with this job as RQ's current job

    result = KINDS[kind].result.model_validate(out)
    prov = result.provenance
    assert prov is not None and prov.kind == kind and prov.model == lm.id and prov.versions["torch"]
    assert prov.params == KINDS[kind].params.model_validate(payload.get("params", {})).model_dump(mode="json")
    assert hook_count(lm.model) == hooks == 0 and metrics.LEFTOVER_HOOKS._value.get() == leftovers
    after = lm.model.state_dict()
    assert after.keys() == weights.keys()
    changed = [k for k in weights if not torch.equal(weights[k], after[k])]
    assert changed == []
