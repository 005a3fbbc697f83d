"""`Job.wait` and `AsyncJob.wait` run one wait loop (`_JobBase._waiting`, no I/O of its own): against
the same scripted server both long-poll, back off on a 503 with `Retry-After`, report each change to
`on_progress` (a coroutine for the async one), stop when the job ends, and time out. httpx's
MockTransport stands in for the API (a unit test of service/client.py alone)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.client import AsyncClient, AsyncJob, Client, Job, LanternError

VIEW = {"id": "j1", "kind": "generate", "model": "m", "progress": 0.0, "queue_position": None}
SCRIPT = [  # (status code, body, headers) answered in order to GET /v1/jobs/j1
    (503, {"type": "unavailable", "status": 503, "title": "The job store is unavailable"}, {"Retry-After": "0"}),
    (200, {**VIEW, "status": "queued"}, {"Retry-After": "0"}),
    (200, {**VIEW, "status": "started", "progress": 0.5}, {"Retry-After": "0"}),
    (200, {**VIEW, "status": "finished", "progress": 1.0}, {}),
]


def _transport(script, seen):
    answers = iter(script)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(float(request.url.params["wait"]))
        code, body, headers = next(answers)
        return httpx.Response(code, json=body, headers=headers)
    return handle


def test_the_sync_wait_polls_backs_off_and_reports_each_change():
    seen, changes = [], []
    client = Client("http://lantern", transport=httpx.MockTransport(_transport(SCRIPT, seen)))
    job = Job(client, {**VIEW, "status": "queued"})
    assert job.wait(timeout=60, on_progress=lambda j: changes.append((j.status, j.progress))) is job
    assert job.status == "finished" and len(seen) == 4 and all(0 < w <= 30 for w in seen)
    assert changes == [("started", 0.5), ("finished", 1.0)]  # the queued view changed nothing


def test_the_async_wait_runs_the_same_loop_with_a_coroutine_callback():
    seen, changes = [], []

    async def on_progress(j):
        changes.append((j.status, j.progress))

    async def main():
        async with AsyncClient("http://lantern", transport=httpx.MockTransport(_transport(SCRIPT, seen))) as client:
            job = AsyncJob(client, {**VIEW, "status": "queued"})
            assert await job.wait(timeout=60, on_progress=on_progress) is job
            return job

    job = asyncio.run(main())
    assert job.status == "finished" and len(seen) == 4
    assert changes == [("started", 0.5), ("finished", 1.0)]


def test_an_error_other_than_busy_and_a_timeout_end_the_wait():
    gone = [(404, {"type": "not-found", "status": 404, "title": "Not found"}, {})]
    client = Client("http://lantern", transport=httpx.MockTransport(_transport(gone, [])))
    with pytest.raises(LanternError, match="404"):
        Job(client, {**VIEW, "status": "queued"}).wait(timeout=60)
    with pytest.raises(TimeoutError, match="still queued"):
        Job(client, {**VIEW, "status": "queued"}).wait(timeout=0)
    done = Job(client, {**VIEW, "status": "finished"})
    assert done.wait(timeout=0) is done  # an ended job asks nothing
