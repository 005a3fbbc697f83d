"""delivery/reaper.py on a real Redis: a job `started` by a worker with no heartbeat is requeued
once, then fails with a `worker-lost` problem; a live worker's job is left alone."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from delivery.reaper import reap
from schemas.keys import queue_name, worker_key

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


def test_a_job_taken_off_the_queue_by_a_worker_that_died_before_starting_it_is_requeued(conn):
    """`kill -9` between RQ's LMOVE into `<queue>:intermediate` and `prepare_job_execution`."""
    q = Queue(queue_name(MODEL), connection=conn, serializer=JSONSerializer)
    job = q.enqueue_call("workers.tasks.run_job", args=({"kind": "generate"},), meta={"owner": "acme"})
    other = q.enqueue_call("workers.tasks.run_job", args=({"kind": "generate"},), meta={"owner": "acme"})
    assert q.dequeue_any([q], timeout=None, connection=conn, serializer=JSONSerializer)[0].id == job.id
    assert conn.lrange(q.intermediate_queue_key, 0, -1) == [job.id.encode()] and q.job_ids == [other.id]
    assert reap(conn, [MODEL], grace_s=60) == []  # first sighting: a live worker may be starting it
    assert reap(conn, [MODEL], grace_s=60) == []  # still within the grace period
    assert reap(conn, [MODEL], grace_s=0) == [(job.id, "requeued")]
    assert q.job_ids == [job.id, other.id] and conn.llen(q.intermediate_queue_key) == 0
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and "worker_lost" not in job.meta  # it never ran
    assert conn.hlen(f"lantern:reap:dequeued:{q.name}") == 0


def test_a_started_job_left_in_the_intermediate_list_is_only_unlisted(conn):
    conn.set(worker_key("alive"), "{}", ex=30)
    job = _start(conn, "alive")
    q = Queue(queue_name(MODEL), connection=conn, serializer=JSONSerializer)
    conn.rpush(q.intermediate_queue_key, job.id)  # what a worker listening to several queues leaves
    assert reap(conn, [MODEL], grace_s=0) == []
    assert conn.llen(q.intermediate_queue_key) == 0 and job.get_status() == JobStatus.STARTED
