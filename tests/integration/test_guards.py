"""Per-tenant rate and concurrency limits, the queue-depth ceiling and Idempotency-Key, on a real
Redis through the real app (service/guards.py): 429/503 with Retry-After, never 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from service.config import Settings
from service.guards import Guards
from service.main import create_app
from service.problems import ProblemError

BODY = {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hi"}, "params": {"max_new_tokens": 1}}


@pytest.fixture
def r(private_redis):
    """A private redis-server: other suites share the one on 6379."""
    conn = Redis.from_url(private_redis.url(0))
    conn.flushdb()
    return conn


@pytest.fixture
def db(r, private_redis) -> str:
    return private_redis.url(0)


def _client(redis_url: str, **over) -> TestClient:
    settings = Settings(redis_url=redis_url, api_keys="acme=ka,beta=kb", **over)
    return TestClient(create_app(settings))


def test_rate_limit_is_per_tenant_with_retry_after(r, db):
    g = Guards(r, Settings(redis_url=db, rate_limit_per_s=3, rate_limit_burst_per_min=100))
    now = 1_000_000.5
    for _ in range(3):
        g.rate("acme", now)
    with pytest.raises(ProblemError) as e:
        g.rate("acme", now)
    assert e.value.problem.status == 429 and e.value.headers["Retry-After"] == "1"
    g.rate("beta", now)  # another tenant is unaffected
    g.rate("acme", now + 1)  # next window


def test_rate_limit_through_the_api(r, db):
    c = _client(db, rate_limit_per_s=1000, rate_limit_burst_per_min=5)
    codes = [c.get("/v1/jobs", headers={"Authorization": "Bearer ka"}).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    res = c.get("/v1/jobs", headers={"Authorization": "Bearer ka"})
    assert res.headers["content-type"] == "application/problem+json" and int(res.headers["retry-after"]) >= 1
    assert c.get("/v1/jobs", headers={"Authorization": "Bearer kb"}).status_code == 200


def test_concurrency_limit_counts_only_live_jobs(r, db):
    c = _client(db, max_active_jobs=2)
    h = {"Authorization": "Bearer ka"}
    ids = [c.post("/v1/jobs", json=BODY, headers=h).json()["id"] for _ in range(2)]
    third = c.post("/v1/jobs", json=BODY, headers=h)
    assert third.status_code == 429 and third.json()["type"].endswith("too-many-active-jobs"), third.text
    assert third.headers["retry-after"]
    assert c.post("/v1/jobs", json=BODY, headers={"Authorization": "Bearer kb"}).status_code == 202
    assert c.delete(f"/v1/jobs/{ids[0]}", headers=h).status_code == 202  # canceled: frees a slot
    assert c.post("/v1/jobs", json=BODY, headers=h).status_code == 202


def test_queue_depth_ceiling_is_503(r, db):
    c = _client(db, max_queue_depth=2)
    h = {"Authorization": "Bearer ka"}
    assert [c.post("/v1/jobs", json=BODY, headers=h).status_code for _ in range(2)] == [202, 202]
    full = c.post("/v1/jobs", json=BODY, headers=h)
    assert full.status_code == 503 and full.headers["retry-after"] and "max_queue_depth" in full.json()["detail"]


def test_idempotency_claim_and_release(r, db):
    g = Guards(r, Settings(redis_url=db))
    first = g.claim("acme", "k1", {"a": 1, "b": 2})
    assert not first.replay
    again = g.claim("acme", "k1", {"b": 2, "a": 1})  # key order does not matter
    assert again.replay and again.job_id == first.job_id
    with pytest.raises(ProblemError) as e:
        g.claim("acme", "k1", {"a": 2})
    assert e.value.problem.status == 422
    assert not g.claim("beta", "k1", {"a": 1, "b": 2}).replay  # per tenant
    g.release(first)
    assert not g.claim("acme", "k1", {"a": 9}).replay  # released: the key is free again
    assert 0 < r.ttl(f"lantern:idem:acme:{__import__('hashlib').sha256(b'k1').hexdigest()}") <= 24 * 3600


def test_open_mode_is_announced(r, db):
    c = TestClient(create_app(Settings(redis_url=db)))
    assert c.get("/readyz").json()["auth"] == "open"
    assert c.get("/v1/jobs").status_code == 200
