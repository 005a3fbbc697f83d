"""icl_anchors over real HTTP on SmolLM2 with the sentiment task of tests/data/sentiment.json: flows,
AUC and re-weighting in one job, the stored β fetched and deleted at /v1/anchors, and bad requests
refused at submit with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
PROBLEM = "application/problem+json"
DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "sentiment.json").read_text())


def test_flows_auc_reweighting_and_the_stored_beta(service):
    demos = DATA["demonstrations"][:4]
    queries = DATA["queries"][:8]
    body = {"kind": "icl_anchors", "model": "smollm2-135m",
            "input": {"label_words": DATA["label_words"], "template": DATA["template"], "demonstrations": demos,
                      "queries": queries, "fit_examples": DATA["fit_examples"][:4]},
            "params": {"flow_queries": 1, "epochs": 3}}
    res = service.run(body, timeout=600)["result"]
    assert res["labels"] == ["positive", "negative"] and res["label_tokens"] == [" positive", " negative"]
    assert res["n_layers"] == 30 and res["n_heads"] == 9
    assert [res["tokens"][p] for p in res["label_positions"]] == [" positive", " negative"] * 2
    assert res["tokens"][res["target_position"]] == ":"
    flows = res["flows"]
    assert all(len(flows[k]) == 30 for k in ("s_wp", "s_pq", "s_ww")) and flows["n_queries"] == 1
    assert flows["s_wp"][-1] == 0.0  # last layer: the label words' rows no longer reach the target
    assert len(res["predictions"]) == 8 and 0.0 <= res["accuracy"] <= 1.0
    if res["auc"] is not None:
        assert len(res["auc"]["auc"]) == 30
    rw = res["reweighting"]
    assert rw["anchors_id"].startswith("an_") and len(rw["fit_loss"]) == 3 and len(rw["beta"]) == 30
    assert rw["accuracy_before"] == res["accuracy"]

    stored = service.http.get(f"/v1/anchors/{rw['anchors_id']}")
    assert stored.status_code == 200
    data = stored.json()["data"]
    assert stored.json()["kind"] == "anchors" and data["beta"] == rw["beta"] and data["labels"] == res["labels"]
    assert rw["anchors_id"] in [a["id"] for a in service.http.get("/v1/anchors").json()["items"]]
    assert service.http.delete(f"/v1/anchors/{rw['anchors_id']}").status_code == 204
    assert service.http.get(f"/v1/anchors/{rw['anchors_id']}").status_code == 404


def test_bad_requests_name_the_field(service):
    base = {"label_words": DATA["label_words"], "demonstrations": DATA["demonstrations"][:2]}
    cases = [
        ({"input": {**base, "query": {"text": "fine", "label": "neutral"}}}, "neutral"),
        ({"input": {**base, "query": {"text": "fine"}}, "params": {"analyses": ["auc"]}}, "analyses"),
        ({"input": {**base, "template": "{label}: {text}", "query": {"text": "fine"}}}, "template"),
        ({"model": "minilm-l6", "input": {**base, "query": {"text": "fine"}}}, "kind"),
    ]
    for extra, needle in cases:
        r = service.submit({"kind": "icl_anchors", "model": "smollm2-135m", **extra})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (extra, r.text)
        assert needle in r.text
