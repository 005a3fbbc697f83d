"""Per-tenant rate and concurrency limits, the queue-depth ceiling and Idempotency-Key, on a real
Redis through the real app (service/guards.py): 429/503 with Retry-After, never 500."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from schemas.jobs import parse_job
from schemas.keys import active_jobs_key, jobs_index_key, tokenizer_digest_key, tokenizer_key
from service import submission
from service.config import Settings
from service.guards import Guards
from service.main import create_app
from service.problems import ProblemError
from tests.integration.test_validation import SMOL, heartbeat

BODY = {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hi"}, "params": {"max_new_tokens": 1}}
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


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
    assert c.get("/v1/models", headers={"Authorization": "Bearer ka"}).status_code == 429  # every route with a key
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


def _publish_tokenizer(r: Redis, model: str) -> None:
    """What a worker publishes for its model, with a small word-level tokenizer."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "Hi": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    blob = json.dumps({"tokenizer": tokenizer.to_str(), "chat_template": None, "special": {}})
    r.set(tokenizer_key(model), blob)
    r.set(tokenizer_digest_key(model), hashlib.sha256(blob.encode()).hexdigest())


def test_a_submit_refused_at_admission_leaves_nothing_behind(r, db):
    """The enqueue is staged before the admission in one MULTI (service/submission.py): a refusal
    takes the job back. On the event-loop path (caches warm) and the thread-pool path (a webhook)."""
    heartbeat(r, SMOL)
    _publish_tokenizer(r, "smollm2-135m")
    c = _client(db, max_queue_depth=2, webhook_allowed_networks="127.0.0.0/8")
    h = {"Authorization": "Bearer ka"}
    assert c.post("/v1/jobs", json=BODY, headers=h).status_code == 202  # warms the facts and the tokenizer
    state = c.app.state  # type: ignore[attr-defined]
    assert not submission._checks_need_io(state, parse_job(BODY))  # so the next one runs on the event loop
    hooked = {**BODY, "webhook": {"url": "http://127.0.0.1:9/hook", "secret": SECRET}}
    assert submission._checks_need_io(state, parse_job(hooked))  # a host name to check: the thread pool
    assert c.post("/v1/jobs", json=BODY, headers={**h, "Idempotency-Key": "second"}).status_code == 202
    for body, key in ((BODY, "third"), (hooked, "fourth")):
        full = c.post("/v1/jobs", json=body, headers={**h, "Idempotency-Key": key})
        assert full.status_code == 503 and full.json()["type"].endswith("queue-full"), full.text
    queue = state.queue.queue_key("smollm2-135m")
    assert r.llen(queue) == 2 and len(r.keys("rq:job:*")) == 2 and r.keys("lantern:webhook-secret:*") == []
    assert r.zcard(jobs_index_key("acme")) == r.zcard(active_jobs_key("acme")) == 2
    assert r.keys("lantern:idem:*") == [f"lantern:idem:acme:{hashlib.sha256(b'second').hexdigest()}".encode()]
    again = c.post("/v1/jobs", json=BODY, headers={**h, "Idempotency-Key": "second"})  # replayed, not refused
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true" and r.llen(queue) == 2


def test_a_submit_transaction_sent_twice_enqueues_the_job_once(r, db):
    """redis-py retries a pipeline whose reply was lost, sending the same MULTI again: the admission
    sees its own slot and drops the second push; with an Idempotency-Key it must not read as a replay
    and take back the job the first run enqueued (service/guards.py)."""
    c = _client(db)
    state = c.app.state  # type: ignore[attr-defined]
    body = parse_job(BODY)
    with r.pipeline(transaction=True) as pipe:
        staged, admission = submission._stage(state, pipe, body, "acme", "once")
        stack = list(pipe.command_stack)
        first = pipe.execute()
    with r.pipeline(transaction=True) as pipe:  # the same commands, as the retry sends them
        pipe.multi()
        for args, options in stack:
            pipe.execute_command(*args, **options)
        second = pipe.execute()
    for results in (first, second):
        assert not state.guards.claim_of(admission, results).replay
        view, _ = state.queue.enqueued(staged, results)
        assert view.id == staged.job.id and view.queue_position == 0
    queue = state.queue.queue_key("smollm2-135m")
    assert r.lrange(queue, 0, -1) == [staged.job.id.encode()] and r.exists(staged.job.key)
    assert r.zcard(jobs_index_key("acme")) == r.zcard(active_jobs_key("acme")) == 1
