"""The job service over real HTTP with a real worker process and the real SmolLM2."""

import time

import pytest

pytestmark = pytest.mark.slow

IOI = {"kind": "attribution", "model": "smollm2-135m",
       "input": {"prompt": "When Mary and John went to the store, John gave a drink to", "target": " Mary"}}
PROBLEM = "application/problem+json"


def test_attribution_job_from_the_readme(service):
    r = service.submit(IOI)
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    assert r.json()["status"] in ("queued", "started") and "retry-after" in r.headers
    view = service.wait(r.json()["id"])
    assert view["status"] == "finished", view
    res = view["result"]
    assert res["target_tokens"] == [" Mary"] and res["input_tokens"][1] == " Mary"
    assert len(res["scores"]) == 1 and len(res["scores"][0]) == len(res["input_tokens"])
    assert res["convergence"]["n_steps"] == 50 and res["convergence"]["rule"] == "gausslegendre"
    assert res["target_logprobs"][0] > -3  # the model expects " Mary"
    assert res["provenance"]["model"] == "smollm2-135m" and res["provenance"]["dtype"] == "float32"
    assert view["progress"] == 1.0 and view["started_at"] <= view["finished_at"]
    listed = service.http.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert view["id"] in [j["id"] for j in listed]


def test_generate_with_chat_messages(service):
    view = service.run({"kind": "generate", "model": "smollm2-135m",
                        "input": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
                        "params": {"max_new_tokens": 8}})
    assert "Paris" in view["result"]["text"]
    assert len(view["result"]["token_logprobs"]) == len(view["result"]["tokens"])


def test_models_report_worker_facts(service):
    models = {m["id"]: m for m in service.http.get("/v1/models").json()["models"]}
    smol = models["smollm2-135m"]
    assert (smol["n_layers"], smol["n_heads"], smol["n_kv_heads"], smol["hidden_size"], smol["vocab_size"]) == \
        (30, 9, 3, 576, 49152)
    assert smol["workers"] >= 1 and "attribution" in smol["kinds"] and smol["device"] == "cpu"
    assert models["minilm-l6"]["architecture"] == "bert"


def test_bad_input_is_a_problem_naming_the_field(service):
    cases = [
        ({**IOI, "model": "gpt-9"}, 422, "model"),
        ({**IOI, "kind": "telepathy"}, 422, "kind"),
        ({**IOI, "input": {"prompt": ""}}, 422, "prompt"),
        ({**IOI, "params": {"n_steps": 100000}}, 422, "n_steps"),
        ({**IOI, "params": {"n_steps": 1000}}, 422, "max_steps"),
        ({**IOI, "input": {"prompt": "word " * 2000}}, 422, "max_prompt_tokens"),
        ({**IOI, "model": "minilm-l6"}, 422, "kind"),
    ]
    for body, status, needle in cases:
        r = service.submit(body)
        assert r.status_code == status and r.headers["content-type"] == PROBLEM, (body, r.text)
        assert needle in r.text
    r = service.http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    r = service.http.post("/v1/jobs", content=b"x" * (2 * 1024 * 1024))
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    r = service.http.get("/v1/jobs/does-not-exist")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM


def test_failed_job_carries_a_problem_and_the_worker_lives_on(service):
    r = service.submit({**IOI, "params": {"baseline": "mask"}})  # SmolLM2 has no mask token: known at submit
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "params", "baseline"], r.text
    # a window wider than the prompt's removable tokens is seen only once the worker has tokenized it
    r = service.submit({**IOI, "params": {"method": "occlusion", "window": 512}})
    view = service.wait(r.json()["id"])
    assert view["status"] == "failed"
    assert view["error"]["status"] == 422 and "window" in view["error"]["detail"]
    assert service.run({**IOI, "params": {"method": "saliency"}})["result"]["scores"]


def test_cancel_queued_and_running_jobs(service):
    long = {"kind": "attribution", "model": "smollm2-135m",
            "input": {"prompt": "The history of the city is long and full of events. " * 12, "target": " It"},
            "params": {"n_steps": 512}}
    running = service.submit(long).json()["id"]
    queued = service.submit(long).json()["id"]
    view = service.wait(running, until=("started",))
    deadline = time.monotonic() + 120
    while not view["progress"] and time.monotonic() < deadline:  # progress is reported while it runs
        time.sleep(0.2)
        view = service.http.get(f"/v1/jobs/{running}").json()
    assert view["status"] == "started" and 0 < view["progress"] < 1
    q = service.http.get(f"/v1/jobs/{queued}").json()
    assert q["status"] == "queued" and q["queue_position"] == 0
    assert service.http.delete(f"/v1/jobs/{queued}").json()["status"] == "canceled"
    asked = service.http.delete(f"/v1/jobs/{running}")
    assert asked.status_code == 202 and asked.json()["cancel_requested"] is True
    view = service.wait(running, timeout=120)
    assert view["status"] == "canceled" and view["error"]["status"] == 409 and view["cancel_requested"] is True
    assert service.http.delete(f"/v1/jobs/{running}").status_code == 409
    assert service.http.get(f"/v1/jobs/{queued}").json()["status"] == "canceled"


def test_metrics_count_submissions(service):
    text = service.http.get("/metrics").text
    assert 'lantern_jobs_submitted_total{kind="attribution",model="smollm2-135m"}' in text
    assert "lantern_queue_depth" in text and "lantern_http_request_seconds_bucket" in text
