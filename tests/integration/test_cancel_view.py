"""Issue 10 item 15: the job view says a cancel was requested while a running job has not yet
reached its next check (real Redis, real RQ jobs; no worker: the job is marked started by hand)."""

from __future__ import annotations

from redis import Redis
from rq.job import JobStatus as RQStatus

from schemas.jobs import JobStatus, parse_job
from service.config import Settings
from service.queue import JobQueue


def test_a_running_job_shows_cancel_requested(redis_url):
    queue = JobQueue(Redis.from_url(redis_url), Settings(redis_url=redis_url))
    request = parse_job({"kind": "generate", "model": "cancel-view-model", "input": {"prompt": "Hello"}})
    view = queue.submit(request, "acme")
    assert view.status is JobStatus.queued and view.cancel_requested is False

    job = queue.fetch(view.id, "acme")
    job.set_status(RQStatus.STARTED)
    assert queue.view(view.id, "acme").cancel_requested is False
    canceled = queue.cancel(job)
    assert canceled.status is JobStatus.started and canceled.cancel_requested is True  # not stopped yet
    assert queue.view(view.id, "acme").cancel_requested is True
    assert queue.view(view.id, "acme").model_dump(mode="json")["cancel_requested"] is True


def test_a_queued_job_canceled_at_once_reads_canceled(redis_url):
    queue = JobQueue(Redis.from_url(redis_url), Settings(redis_url=redis_url))
    view = queue.submit(parse_job({"kind": "generate", "model": "cancel-view-model", "input": {"prompt": "Hi"}}),
                        "acme")
    out = queue.cancel(queue.fetch(view.id, "acme"))
    assert out.status is JobStatus.canceled and out.cancel_requested is True
