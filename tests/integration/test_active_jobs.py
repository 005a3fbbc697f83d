"""`max_active_jobs` under a burst, over real HTTP on a real Redis (service/guards.py): the check
and the record of a tenant's active job are one atomic step, so 300 concurrent submits with the
limit at 10 accept exactly 10; a job that ends however it ends (failed on a worker, canceled,
failed by the reaper, expired) gives its slot back."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from delivery.reaper import reap
from schemas.keys import active_jobs_key, queue_name

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
BODY = {"kind": "generate", "model": MODEL, "input": {"prompt": "Hi"}, "params": {"max_new_tokens": 1}}
AUTH = {"Authorization": "Bearer ka"}
LIMIT = 10
ENV = {"LANTERN_API_KEYS": "acme=ka,beta=kb", "LANTERN_MAX_ACTIVE_JOBS": str(LIMIT),
       "LANTERN_RATE_LIMIT_PER_S": "100000", "LANTERN_RATE_LIMIT_BURST_PER_MIN": "1000000"}


async def _burst(base_url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=120,
                                 limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)) as c:
        return await asyncio.gather(*(c.post("/v1/jobs", json=BODY) for _ in range(n)))


def _accepted(responses: list[httpx.Response]) -> list[str]:
    assert {r.status_code for r in responses} <= {202, 429}, {r.status_code: r.text for r in responses}
    for r in responses:
        if r.status_code == 429:
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("too-many-active-jobs") and int(r.headers["retry-after"]) >= 1
    return [r.json()["id"] for r in responses if r.status_code == 202]


def _live(conn: Redis) -> int:
    statuses = [Job.fetch(i.decode(), connection=conn, serializer=JSONSerializer).get_status()
                for i in conn.zrange(active_jobs_key("acme"), 0, -1)]
    return sum(s in (JobStatus.QUEUED, JobStatus.STARTED) for s in statuses)


def test_300_concurrent_submits_accept_exactly_the_limit_and_an_ended_job_frees_its_slot(api_process):
    with api_process(1, **ENV) as api, httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as c:
        conn = Redis.from_url(api.env["LANTERN_REDIS_URL"])
        accepted = _accepted(asyncio.run(_burst(api.base_url, 300)))
        assert len(accepted) == LIMIT
        queue = Queue(queue_name(MODEL), connection=conn, serializer=JSONSerializer)
        assert sorted(queue.job_ids) == sorted(accepted)  # no job was enqueued beyond the limit
        assert c.post("/v1/jobs", json=BODY).status_code == 429

        # A worker ends the oldest job (this worker holds no model: run_job fails it); the worker
        # itself gives the slot back, before any submit looks.
        first = queue.job_ids[0]
        SimpleWorker([queue], connection=conn, serializer=JSONSerializer).work(burst=True, max_jobs=1)
        assert Job.fetch(first, connection=conn, serializer=JSONSerializer).get_status() == JobStatus.FAILED
        assert conn.zscore(active_jobs_key("acme"), first) is None
        again = c.post("/v1/jobs", json=BODY)
        assert again.status_code == 202, again.text
        assert c.post("/v1/jobs", json=BODY).status_code == 429

        # Canceled: the slot is free at once (a job still queued, not the one the worker ended).
        queued = next(j for j in accepted if j != first)
        assert c.delete(f"/v1/jobs/{queued}").status_code == 202
        assert conn.zscore(active_jobs_key("acme"), queued) is None
        assert c.post("/v1/jobs", json=BODY).status_code == 202
        assert c.post("/v1/jobs", json=BODY).status_code == 429
        assert _live(conn) == LIMIT

        # Another tenant has its own slots.
        assert c.post("/v1/jobs", json=BODY, headers={"Authorization": "Bearer kb"}).status_code == 202


def test_a_job_failed_by_the_reaper_or_expired_frees_its_slot(api_process):
    with api_process(2, **{**ENV, "LANTERN_MAX_ACTIVE_JOBS": "2"}) as api, \
            httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as c:
        conn = Redis.from_url(api.env["LANTERN_REDIS_URL"])
        ids = [c.post("/v1/jobs", json=BODY).json()["id"] for _ in range(2)]
        assert c.post("/v1/jobs", json=BODY).status_code == 429

        # A worker takes the first job and dies mid-run: the reaper fails it and frees the slot.
        queue = Queue(queue_name(MODEL), connection=conn, serializer=JSONSerializer)
        worker = SimpleWorker([queue], connection=conn, serializer=JSONSerializer, name="ghost")
        job = queue.dequeue_any([queue], timeout=None, connection=conn, serializer=JSONSerializer)[0]
        worker.prepare_execution(job)
        worker.prepare_job_execution(job)
        assert reap(conn, [MODEL], retries=0) == [(job.id, "failed")]
        assert conn.zscore(active_jobs_key("acme"), job.id) is None
        third = c.post("/v1/jobs", json=BODY)
        assert third.status_code == 202, third.text
        assert c.post("/v1/jobs", json=BODY).status_code == 429

        # The second job expires (its hash is gone, as after `queued_ttl_s`): nothing releases it,
        # yet the next check prunes its entry.
        conn.delete(f"rq:job:{ids[1]}")
        conn.zadd(active_jobs_key("acme"), {ids[1]: 1.0})  # recorded long ago
        assert c.post("/v1/jobs", json=BODY).status_code == 202
        assert conn.zscore(active_jobs_key("acme"), ids[1]) is None
