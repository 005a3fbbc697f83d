"""KServe's v1 explainer protocol on a real Redis through the real app, no worker: the submit path
of /v1/jobs (auth, limits, problems located in the KServe body, all-or-none admission) and the 202
with the jobs to poll when the explanations are not ready within `wait`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from schemas.keys import active_jobs_key, queue_name
from service.config import Settings
from service.main import create_app

MODEL = "smollm2-135m"
URL = f"/v1/models/{MODEL}:explain"
AUTH = {"Authorization": "Bearer ka"}
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture
def db(private_redis) -> str:
    Redis.from_url(private_redis.url(5)).flushdb()
    return private_redis.url(5)


def _client(db: str, **over) -> TestClient:
    return TestClient(create_app(Settings(redis_url=db, api_keys="acme=ka", **over)))


def test_instances_become_attribution_jobs_and_a_pending_answer_links_them(db):
    c = _client(db)
    r = c.post(URL + "?wait=0", headers=AUTH, json={
        "instances": [PROMPT, {"prompt": PROMPT, "target": " Mary"}], "parameters": {"method": "saliency"}})
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["kind"] for j in jobs] == ["attribution"] * 2 and {j["model"] for j in jobs} == {MODEL}
    assert r.headers["location"] == jobs[0]["links"]["self"] and int(r.headers["retry-after"]) >= 1
    queue = Queue(queue_name(MODEL), connection=Redis.from_url(db), serializer=JSONSerializer)
    payloads = [queue.fetch_job(j["id"]).args[0] for j in jobs]
    assert [p["input"] for p in payloads] == [{"prompt": PROMPT, "messages": None, "target": None},
                                              {"prompt": PROMPT, "messages": None, "target": " Mary"}]
    assert {p["params"]["method"] for p in payloads} == {"saliency"}
    assert c.get(jobs[1]["links"]["self"], headers=AUTH).json()["status"] == "queued"  # polled like any job


def test_same_auth_and_problems_as_jobs_located_in_the_kserve_body(db, monkeypatch):
    monkeypatch.setenv("LANTERN_MAX_STEPS", "100")
    c = _client(db)
    denied = c.post(URL, json={"instances": [PROMPT]})
    assert denied.status_code == 401 and denied.headers["content-type"] == "application/problem+json"
    over = c.post(URL, headers=AUTH, json={"instances": [PROMPT], "parameters": {"n_steps": 500}})
    assert over.status_code == 422 and over.headers["content-type"] == "application/problem+json"
    (err,) = over.json()["errors"]
    assert err["loc"] == ["body", "parameters", "n_steps"] and "max_steps=100" in err["msg"]
    unknown = c.post("/v1/models/nope:explain", headers=AUTH, json={"instances": [PROMPT]})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["loc"] == ["path", "name"]
    malformed = c.post(URL, headers=AUTH, json={"instances": [{"target": " Mary"}]})
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["loc"][:3] == ["body", "instances", 0]
    assert c.post(URL, headers=AUTH, json={"instances": []}).status_code == 422


def test_all_or_none_an_instance_refused_at_admission_cancels_the_others(db):
    c = _client(db, max_active_jobs=1)
    refused = c.post(URL + "?wait=0", headers=AUTH, json={"instances": [PROMPT, PROMPT]})
    assert refused.status_code == 429 and refused.json()["type"].endswith("too-many-active-jobs"), refused.text
    r = Redis.from_url(db)
    assert r.zcard(active_jobs_key("acme")) == 0  # the first instance's slot is back
    assert Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer).count == 0
    assert c.post(URL + "?wait=0", headers=AUTH, json={"instances": [PROMPT]}).status_code == 202
