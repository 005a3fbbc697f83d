"""workers/reaper.py on a real Redis: a job `started` by a worker with no heartbeat is requeued
once, then fails with a `worker-lost` problem; a live worker's job is left alone."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from schemas.keys import queue_name, worker_key
from workers.reaper import reap

MODEL = "reaper-test"


@pytest.fixture
def conn(private_redis):
    """A private redis-server: other suites share the one on 6379."""
    conn = Redis.from_url(private_redis.url(0))
    conn.flushdb()
    return conn


def _start(conn, worker_name: str) -> Job:
    """Put a job into the state a worker leaves it in when it dies mid-run."""
    q = Queue(queue_name(MODEL), connection=conn, serializer=JSONSerializer)
    job = q.enqueue_call("workers.tasks.run_job", args=({"kind": "generate"},), meta={"owner": "acme"})
    worker = SimpleWorker([q], connection=conn, serializer=JSONSerializer, name=worker_name)
    job = q.dequeue_any([q], timeout=None, connection=conn, serializer=JSONSerializer)[0]
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return job


def test_live_worker_jobs_are_left_alone(conn):
    conn.set(worker_key("alive"), "{}", ex=30)
    job = _start(conn, "alive")
    assert reap(conn, [MODEL], retries=1) == []
    assert job.get_status() == JobStatus.STARTED


def test_dead_worker_job_is_retried_once_then_fails(conn):
    job = _start(conn, "ghost-1")
    assert reap(conn, [MODEL], retries=1) == [(job.id, "requeued")]
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.meta["worker_lost"] == 1
    assert reap(conn, [MODEL], retries=1) == []  # nothing started now
    again = _start(conn, "ghost-2")
    assert again.id == job.id
    assert reap(conn, [MODEL], retries=1) == [(job.id, "failed")]
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["type"].endswith("worker-lost") and "ghost-2" in job.meta["error"]["detail"]
    assert conn.zcard(Queue(queue_name(MODEL), connection=conn).started_job_registry.key) == 0


def test_zero_retries_fails_at_once(conn):
    job = _start(conn, "ghost-3")
    assert reap(conn, [MODEL], retries=0) == [(job.id, "failed")]
