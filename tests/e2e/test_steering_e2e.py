"""ITI over real HTTP: fit a steering profile, fetch it, generate steered (with the unsteered
baseline beside it), probe, and delete the profile; a deleted or foreign profile is a 422/404."""

from __future__ import annotations

import pytest

from bench.bench_steering import examples, items

pytestmark = pytest.mark.slow
PROBLEM = "application/problem+json"


def test_fit_fetch_steer_delete(service):
    exs = examples(items()[:20])  # 20 questions × (true, false)
    fit = service.run({"kind": "steering_fit", "model": "smollm2-135m", "input": {"examples": exs},
                       "params": {"n_heads": 8, "folds": 4}}, timeout=600)["result"]
    pid = fit["profile_id"]
    assert pid.startswith("sp_") and len(fit["heads"]) == 8
    assert len(fit["accuracy_grid"]) == 30 and len(fit["accuracy_grid"][0]) == 9
    assert fit["provenance"]["kind"] == "steering_fit"

    profile = service.http.get(f"/v1/steering-profiles/{pid}")
    assert profile.status_code == 200
    body = profile.json()
    assert body["model"] == "smollm2-135m" and body["kind"] == "steering-profiles" and body["created_at"]
    assert [(h["layer"], h["head"]) for h in body["data"]["heads"]] == [(h["layer"], h["head"]) for h in fit["heads"]]
    assert len(body["data"]["heads"][0]["direction"]) == 64 and body["data"]["params"]["n_heads"] == 8
    listed = service.http.get("/v1/steering-profiles", params={"limit": 100}).json()["items"]
    assert pid in [p["id"] for p in listed]

    gen = {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Q: What is the capital of Spain?\nA:"},
           "params": {"max_new_tokens": 6, "steering": {"profile_id": pid, "alpha": 0}, "compare_baseline": True}}
    zero = service.run(gen)["result"]
    assert zero["token_ids"] == zero["baseline_token_ids"]  # α = 0 is the unsteered model, exactly
    assert zero["token_logprobs"] == zero["baseline_token_logprobs"]
    gen["params"]["steering"]["alpha"] = 40
    steered = service.run(gen)["result"]
    assert steered["baseline_text"] == zero["baseline_text"]
    assert steered["token_logprobs"] != steered["baseline_token_logprobs"]
    assert service.run({**gen, "kind": "attribution", "input": {**gen["input"], "target": " Madrid"},
                        "params": {"method": "saliency", "steering": {"profile_id": pid, "alpha": 40}}})

    assert service.http.delete(f"/v1/steering-profiles/{pid}").status_code == 204
    gone = service.http.get(f"/v1/steering-profiles/{pid}")
    assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM
    r = service.submit(gen)  # a deleted profile is refused at submit
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM and pid in r.text
    assert r.json()["errors"][0]["loc"] == ["body", "params", "steering", "profile_id"]


def test_probe_job_and_bad_requests(service):
    exs = [{"text": f"Q: {it['question']}\nA: {it[k]}", "label": k, "group": it["question"]}
           for it in items()[:16] for k in ("true", "false")]
    res = service.run({"kind": "probe", "model": "smollm2-135m", "input": {"examples": exs},
                       "params": {"site": "residual", "folds": 4, "layers": [0, 10, 20]}})["result"]
    assert res["layers"] == [0, 10, 20] and len(res["accuracy"]) == 3 and res["classes"] == ["false", "true"]
    assert res["validation"] == "k-fold (k=4)" and res["best"][0]["layer"] in (0, 10, 20)
    enc = service.run({"kind": "probe", "model": "minilm-l6", "input": {"examples": exs},
                       "params": {"site": "attn_head", "position": "mean", "folds": 2, "layers": [5]}})["result"]
    assert len(enc["accuracy"]) == 1 and len(enc["accuracy"][0]) == 12
    cases = [
        ({"kind": "steering_fit", "model": "smollm2-135m", "input": {"examples": exs[:3]}}, "examples"),
        ({"kind": "probe", "model": "smollm2-135m", "input": {"examples": exs}, "params": {"site": "kv"}}, "site"),
        ({"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "x"},
          "params": {"steering": {"profile_id": "nope", "alpha": 1}}}, "profile_id"),
        ({"kind": "steering_fit", "model": "minilm-l6", "input": {"examples": [
            {"prompt": "a", "completion": "b", "label": i % 2 == 0} for i in range(4)]}}, "kind"),
    ]
    for body, needle in cases:
        r = service.submit(body)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (body, r.text)
        assert needle in r.text
