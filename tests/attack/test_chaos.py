"""Workers killed with SIGKILL while they run jobs: no job is lost or stuck `started`; each ends
finished, or failed with a reason; with retries off the caller's webhook says the job failed."""

from __future__ import annotations

import random
import signal
import time

import pytest
from standardwebhooks import Webhook as Verifier

from tests.attack.conftest import SECRETS, Stack, gen
from tests.attack.test_webhooks_e2e import Receiver

pytestmark = pytest.mark.slow
N_JOBS = 100
KILLS = 3


def _stack(server, model_dir, db: int, env: dict[str, str]) -> Stack:
    s = Stack(server.url(db), model_dir, env)
    s.start_api()
    s.start_webhook_worker()
    return s


def _kill_a_busy_worker(s: Stack, rng: random.Random, feed, timeout: float = 120) -> bool:
    """SIGKILL a worker while some job is started (a worker is picked at random); restart one.

    On a loaded machine the queue can drain before the kill: `feed()` submits one more job then,
    so there is always a job to catch running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s.redis.zcard("rq:wip:lantern:tiny-llama"):
            break
        if not s.redis.llen("rq:queue:lantern:tiny-llama"):
            feed()
        time.sleep(0.005)
    else:
        return False
    alive = [p for p in s.workers if p.poll() is None]
    victim = rng.choice(alive)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    s.start_worker()
    return True


def test_kill_9_during_100_jobs_loses_none(attack_redis, tiny_model_dir):
    rng = random.Random(7)
    s = _stack(attack_redis, tiny_model_dir, 3, {})
    try:
        s.start_worker()
        s.start_worker()
        s.wait_workers(2)
        ids, kills = [], 0
        with s.client("acme") as c:

            def submit(label: str) -> None:
                r = c.post("/v1/jobs", json=gen(f"Two plus two is {label}", tokens=8))
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])

            for chunk in range(KILLS + 1):  # the kills land between chunks, so there is always work
                for i in range(N_JOBS // (KILLS + 1)):
                    submit(f"{chunk}-{i}")
                if chunk < KILLS:
                    time.sleep(rng.uniform(0.05, 0.5))
                    kills += _kill_a_busy_worker(s, rng, lambda: submit(f"extra-{len(ids)}"))
        views = [s.wait(i, timeout=240) for i in ids]
        statuses = [v["status"] for v in views]
        assert kills == KILLS
        assert all(st in ("finished", "failed") for st in statuses), statuses
        for v in views:
            if v["status"] == "failed":
                assert v["error"]["type"].endswith("worker-lost") and v["error"]["detail"], v["error"]
        assert statuses.count("finished") >= len(ids) - KILLS  # each kill costs at most one retry
        assert s.redis.zcard("rq:wip:lantern:tiny-llama") == 0  # nothing left `started`
        requeued = sum(1 for i in ids if b"worker_lost" in (s.redis.hget(f"rq:job:{i}", "meta") or b""))
        assert requeued >= 1  # at least one kill did land mid-job and was retried
    finally:
        s.stop()


def test_without_retries_a_killed_job_fails_and_its_webhook_says_so(attack_redis, tiny_model_dir):
    """Kill the worker while the job runs; a job that finished before the kill landed is tried again
    with a fresh worker until one kill lands mid-job (the test never passes without one)."""
    receiver = Receiver(fail=0)
    s = _stack(attack_redis, tiny_model_dir, 4, {"LANTERN_WORKER_LOST_RETRIES": "0"})
    try:
        for _attempt in range(6):
            worker = s.start_worker()
            s.wait_workers(1)
            with s.client("acme") as c:
                body = gen("The quick brown fox " * 20, 256, webhook={"url": receiver.url, "events": ["failed"]})
                body["params"]["stop_at_eos"] = False
                job_id = c.post("/v1/jobs", json=body).json()["id"]
                while c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued":
                    time.sleep(0.005)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            view = s.wait(job_id, timeout=60)
            if view["status"] != "finished":
                break
        else:
            pytest.fail("in 6 tries the job always finished before the kill landed")
        assert view["status"] == "failed" and view["error"]["type"].endswith("worker-lost"), view
        receiver.wait_accepted(1, timeout=30)
        (got,) = receiver.accepted.values()
        payload = Verifier(SECRETS["acme"]).verify(got["body"], got["headers"])
        assert payload["type"] == "job.failed" and payload["data"]["error"]["type"].endswith("worker-lost")
    finally:
        s.stop()
        receiver.server.shutdown()
