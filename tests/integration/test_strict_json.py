"""Issue 10 item 5: JSON leaves Lantern strict (`allow_nan=False`) on every path results travel:
API responses (FastAPI's default wrote NaN as `null`), webhook bodies, the worker's result check
(tests/unit/test_finite.py). Real Redis (the API's guards), the app in-process."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from common import webhook_queue as webhooks
from common.webhook_events import build_entry
from schemas.jobs import JobLinks, JobStatus, JobView
from schemas.keys import WEBHOOK_QUEUE
from service.config import Settings
from service.main import create_app


def _view(result: dict) -> JobView:
    return JobView(id="j1", kind="attribution", model="m", status=JobStatus.finished, progress=1.0,
                   result=result, links=JobLinks(self="/v1/jobs/j1"))


@pytest.fixture
def client(redis_url):
    app = create_app(Settings(redis_url=redis_url))
    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.queue.fetch = lambda job_id, owner: object()  # the job exists: the stubbed view answers
        yield app, c


def test_a_finite_result_is_served_as_is(client):
    app, c = client
    app.state.queue.view = lambda job_id, owner: _view({"scores": [[0.5, -1e-300, 2.0]]})
    r = c.get("/v1/jobs/j1")
    assert r.status_code == 200 and r.json()["result"] == {"scores": [[0.5, -1e-300, 2.0]]}


def test_a_nan_in_a_response_is_a_server_error_never_null(client):
    app, c = client
    app.state.queue.view = lambda job_id, owner: _view({"scores": [[0.5, math.nan]]})
    r = c.get("/v1/jobs/j1")
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/problem+json")
    assert "null" not in r.text and "NaN" not in r.text


def test_webhook_bodies_are_strict_json(redis_url):
    payload = {"kind": "generate", "model": "m", "webhook": {"url": "https://example.com/h", "events": ["finished"]}}
    fine = build_entry("j1", "acme", payload, "finished", result={"x": [1.0]})
    assert json.loads(fine["body"])["data"]["result"] == {"x": [1.0]}
    with pytest.raises(ValueError):
        build_entry("j1", "acme", payload, "finished", result={"x": [math.inf]})

    class Job:
        id, meta, args = "j-nan", {"owner": "acme"}, [payload]

    r = Redis.from_url(redis_url)
    r.delete(WEBHOOK_QUEUE)
    assert webhooks.notify(r, Job(), "finished", result={"x": [math.nan]}) is False
    assert r.llen(WEBHOOK_QUEUE) == 0
