"""syntactic_attention over real HTTP: on the bundled SmolLM2, and on the checkpoints of a grammar
model trained from scratch here (a small version of `make checkpoints`), served by a worker whose
checkpoint LRU holds fewer checkpoints than the model has: every `checkpoint` job finishes on its
own step's weights (equal to the method run directly on that step's folder) and the registry lists
the checkpoints."""

from __future__ import annotations

import pytest

from bench.train_checkpoints import train
from schemas.examples import EXAMPLES
from schemas.jobs import parse_job
from schemas.models import ModelSpec
from tests.conftest import running_service
from workers.context import Context
from workers.datasets.grammar import sentences
from workers.methods import syntactic_attention
from workers.models.checkpoints import module_bytes
from workers.models.loading import load_model, wrap

pytestmark = pytest.mark.slow


def test_syntactic_attention_on_the_bundled_model(service):
    res = service.run(EXAMPLES["syntactic_attention"])["result"]
    assert res["n_sentences"] == 2 and res["n_words"] == 12 and len(res["uas"]) == 30 and len(res["uas"][0]) == 9
    assert res["sas"] == max(max(row) for row in res["uas"]) == res["best"]["score"]
    assert res["uas"][res["best"]["layer"]][res["best"]["head"]] == res["sas"]
    assert {r["relation"] for r in res["relations"]} == {"det", "nsubj", "case", "nmod", "obj", "acl:relcl"}
    assert res["provenance"]["kind"] == "syntactic_attention" and res["provenance"]["checkpoint"] is None


@pytest.fixture(scope="module")
def grammar_service(redis_url, tmp_path_factory):
    """A tiny grammar LLaMA with 4 checkpoints, and an API + one worker whose LRU fits one checkpoint."""
    out = tmp_path_factory.mktemp("grammar")
    entry = train(out, steps=24, n_checkpoints=4, layers=2, heads=2, hidden=32, batch_size=16, log=None)
    budget = module_bytes(load_model(ModelSpec.model_validate(entry)).model) * 3 // 2  # one checkpoint fits
    with running_service(redis_url, (entry["id"],), LANTERN_MODELS_FILE=str(out / "models.json"),
                         LANTERN_CHECKPOINT_CACHE_BYTES=str(budget), LANTERN_TORCH_THREADS="1") as svc:
        yield svc, ModelSpec.model_validate(entry), budget


def test_checkpoint_jobs_run_on_their_steps_through_a_small_lru(grammar_service):
    svc, spec, budget = grammar_service
    steps = [c.step for c in spec.checkpoints]
    assert len(steps) == 4
    view = svc.http.get(f"/v1/models/{spec.id}").json()
    assert [c["step"] for c in view["checkpoints"]] == steps and "path" not in view["checkpoints"][0]
    body = {"kind": "syntactic_attention", "model": spec.id,
            "input": {"sentences": [s.dict() for s in sentences(6, seed=99)]}}
    from transformers import AutoModelForCausalLM

    tokenizer = load_model(spec).tokenizer  # the base's (the final step's folder); the others have none
    results = {}
    for step in [*steps, steps[0]]:  # more checkpoints than the LRU holds, then the first again (reloaded)
        res = svc.run({**body, "checkpoint": step})["result"]
        assert res["provenance"]["checkpoint"] == step
        direct = wrap(spec, AutoModelForCausalLM.from_pretrained(spec.checkpoint(step).path), tokenizer)
        assert module_bytes(direct.model) * 2 > budget  # the LRU holds one checkpoint at most
        expected = syntactic_attention.run(direct, parse_job(body), Context()).model_dump(mode="json")
        assert res["uas_by_direction"] == expected["uas_by_direction"] and res["sas"] == expected["sas"]
        results[step] = res
    assert len({str(r["uas_by_direction"]) for r in results.values()}) > 1  # the steps differ
    base = svc.run(body)["result"]  # the base model is the final step's folder
    assert base["provenance"]["checkpoint"] is None
    assert base["uas_by_direction"] == results[steps[-1]]["uas_by_direction"]
    bad = svc.submit({**body, "checkpoint": 7})
    assert bad.status_code == 422 or svc.wait(bad.json()["id"])["status"] == "failed"
