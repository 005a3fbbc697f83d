"""Lantern as a KServe explainer, called as KServe's router calls it: the `:explain` request the
router forwards (same path, same JSON body) over real HTTP to a real API and worker with SmolLM2."""

import json

import pytest

pytestmark = pytest.mark.slow

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_explain_as_the_kserve_router_forwards_it(service):
    body = {"instances": [PROMPT, {"prompt": PROMPT, "target": " Mary"}], "parameters": {"method": "saliency"}}
    r = service.http.post("/v1/models/smollm2-135m:explain", content=json.dumps(body),  # held up to max_wait_s
                          headers={"Content-Type": "application/json"}, timeout=120)
    if r.status_code == 202:  # not done within max_wait_s (a busy machine): the same jobs, polled
        explanations = [service.wait(j["id"])["result"] for j in r.json()["jobs"]]
    else:
        assert r.status_code == 200, r.text
        explanations = r.json()["explanations"]
    generated, mary = explanations
    assert generated["target_generated"] is True and mary["target_tokens"] == [" Mary"]
    for e in explanations:
        assert e["method"] == "saliency" and e["provenance"]["model"] == "smollm2-135m"
        assert len(e["scores"]) == 1 and len(e["scores"][0]) == len(e["input_tokens"])
