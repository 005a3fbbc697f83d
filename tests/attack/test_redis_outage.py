"""Redis stopped and started under a running stack (a private redis-server on its own port, never
the shared one): the API answers 503 problem+json with Retry-After while it is away, `/healthz`
stays up, and everything recovers by itself: the API, the model worker and the webhook worker."""

from __future__ import annotations

import time

import pytest

from tests.attack.conftest import Stack, gen
from tests.redis_server import PrivateRedis

pytestmark = pytest.mark.slow


def _until(fn, timeout: float = 60, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(getattr(fn, "__name__", "condition"))
        time.sleep(step)


def test_redis_outage_gives_503_then_recovers(tmp_path, tiny_model_dir):
    redis = PrivateRedis(tmp_path, persist=True)
    redis.start()
    s = Stack(redis.url(0), tiny_model_dir)
    try:
        s.start_all()
        with s.client("acme") as c:
            first = c.post("/v1/jobs", json=gen()).json()["id"]
            assert s.wait(first)["status"] == "finished"

            redis.stop()
            for call in (lambda: c.post("/v1/jobs", json=gen()), lambda: c.get(f"/v1/jobs/{first}"),
                         lambda: c.get("/v1/jobs"), lambda: c.get("/readyz")):
                r = call()
                assert r.status_code == 503, r.text
                assert r.headers["content-type"] == "application/problem+json" and int(r.headers["retry-after"]) > 0
            assert c.get("/healthz").status_code == 200
            time.sleep(2)  # the outage itself lasts 2 s, so the workers' own Redis calls fail too

            redis.start()  # same port and data folder (append-only file)
            _until(lambda: c.get("/readyz").status_code == 200)
            assert c.get(f"/v1/jobs/{first}").json()["status"] == "finished"  # data survived
            second = c.post("/v1/jobs", json=gen("Hello world")).json()["id"]
            assert s.wait(second, timeout=90)["status"] == "finished"  # the worker reconnected
        assert s.api.poll() is None and all(w.poll() is None for w in s.workers) and s.hook_worker.poll() is None
    finally:
        s.stop()
        redis.stop()
