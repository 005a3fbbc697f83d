"""A sweep across training checkpoints over real HTTP with real worker processes (API, two model
workers, the webhook worker; tests/attack/conftest.py's Stack) on a tiny LLaMA whose registry entry
lists checkpoints saved by the fixture:

- the sweep's series equals single `checkpoint` jobs on the same workers, and the parent's webhook
  arrives once every child has ended, though nobody polls the parent (the webhook worker finalizes it);
- a worker SIGKILLed while it runs a child loses no checkpoint: the reaper requeues the child on
  the other worker and the sweep finishes with every result.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks import Webhook as Verifier

from tests.attack.conftest import MODEL, SECRETS, Stack
from tests.attack.test_webhooks_e2e import Receiver
from tests.redis_server import PrivateRedis

pytestmark = pytest.mark.slow
STEPS = [0, 3, 30, 300, 3000, 30000]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, list[dict]]:
    from tests.tiny import tiny_llama

    root = tmp_path_factory.mktemp("sweep-checkpoints")

    def save(seed: int, name: str) -> Path:
        lm = tiny_llama(seed=seed)
        lm.model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
        return root / name

    base = save(50, "base")
    return base, [{"step": s, "source": "dir", "path": str(save(i + 1, f"step-{s}"))} for i, s in enumerate(STEPS)]


@pytest.fixture(scope="module")
def sweep_redis(tmp_path_factory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("sweep-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(sweep_redis, checkpoints) -> Iterator[Stack]:
    """One stack for the module (starting one costs tens of seconds on two busy cores)."""
    s = _stack(sweep_redis, checkpoints, 1)
    try:
        yield s
    finally:
        s.stop()


def _stack(server: PrivateRedis, checkpoints, db: int) -> Stack:
    base, ckpts = checkpoints
    models = [{"id": MODEL, "source": "dir", "path": str(base), "dtype": "float32", "device": "cpu",
               "checkpoints": ckpts}]
    # no checkpoint kept in the LRU: each child loads its own, so a child runs long enough to be killed
    s = Stack(server.url(db), base, {"LANTERN_MODELS": json.dumps(models), "LANTERN_CHECKPOINT_CACHE_BYTES": "0"})
    s.start_api()
    s.start_webhook_worker()
    s.start_worker()
    s.start_worker()
    s.wait_workers(2)
    return s


def _gen(**extra) -> dict:
    return {"kind": "generate", "model": MODEL, "input": {"prompt": "The quick brown fox"},
            "params": {"max_new_tokens": 24, "stop_at_eos": False}, **extra}


def _timeless(result: dict) -> dict:
    out = json.loads(json.dumps(result))
    out["provenance"].pop("elapsed_s")
    return out


def test_sweep_equals_single_jobs_and_its_webhook_arrives_unpolled(stack):
    receiver = Receiver(fail=0)
    s = stack
    try:
        with s.client("acme") as c:
            hook = {"url": receiver.url, "events": ["finished", "failed"]}
            sweep = c.post("/v1/jobs", json=_gen(checkpoints=STEPS[:3], webhook=hook))
            assert sweep.status_code == 202, sweep.text
            singles = [c.post("/v1/jobs", json=_gen(checkpoint=step)).json()["id"] for step in STEPS[:3]]
            receiver.wait_accepted(1, timeout=120)  # the parent's, with no GET of the parent before it
            (got,) = receiver.accepted.values()
            payload = Verifier(SECRETS["acme"]).verify(got["body"], got["headers"])
            assert payload["type"] == "job.finished" and payload["data"]["id"] == sweep.json()["id"]
            view = s.wait(sweep.json()["id"])
            assert view["status"] == "finished" and view["result"] == payload["data"]["result"]
            series = view["result"]["series"]
            assert [p["step"] for p in series] == STEPS[:3]
            for point, single in zip(series, singles):
                single_view = s.wait(single)
                assert _timeless(point["result"]) == _timeless(single_view["result"])
            texts = {p["result"]["text"] for p in series}
            assert len(texts) > 1  # the checkpoints really differ
    finally:
        receiver.server.shutdown()


def test_a_worker_killed_mid_sweep_loses_no_checkpoint(stack):
    """SIGKILL the worker running a child; a sweep that ended before a kill landed is submitted again
    (the test never passes without a kill landing mid-child)."""
    s = stack
    with s.client("acme") as c:
        for _attempt in range(5):
            sweep_id = c.post("/v1/jobs", json=_gen(checkpoints="all")).json()["id"]
            deadline = time.monotonic() + 60
            running = None
            while time.monotonic() < deadline and running is None:
                for raw in s.redis.zrange(f"rq:wip:lantern:{MODEL}", 0, -1):
                    job_id = raw.decode().split(":")[0]
                    if job_id.startswith(sweep_id + "_s"):
                        running = job_id
                if c.get(f"/v1/jobs/{sweep_id}").json()["status"] in ("finished", "failed"):
                    break
                time.sleep(0.003)
            if running is None:
                continue
            worker_name = s.redis.hget(f"rq:job:{running}", "worker_name").decode()
            victim = next(p for p in s.workers if p.poll() is None and f"-{p.pid}-" in worker_name)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            s.start_worker()
            if s.redis.hget(f"rq:job:{running}", "status") != b"finished":  # else it ended just before the kill
                break
        else:
            pytest.fail("in 5 sweeps no kill landed while a child ran")
        view = s.wait(sweep_id, timeout=180)
    assert view["status"] == "finished", view
    result = view["result"]
    assert result["finished"] == len(STEPS) and [p["step"] for p in result["series"]] == STEPS
    assert all(p["status"] == "finished" and p["result"] for p in result["series"])
    meta = json.loads(s.redis.hget(f"rq:job:{running}", "meta"))
    assert meta["worker_lost"] == 1  # the killed child was requeued by the reaper, and finished
    assert s.redis.zcard(f"rq:wip:lantern:{MODEL}") == 0
