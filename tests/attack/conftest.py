"""A full Lantern stack as subprocesses (API with API keys, model workers on a tiny LLaMA saved to
a folder, the webhook worker) over real HTTP and a real Redis database of its own, for the attack
tests. The tiny model keeps start-up and kill/restart cycles to seconds on two cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis

from tests.conftest import ROOT, free_port
from tests.redis_server import PrivateRedis

MODEL = "tiny-llama"
KEYS = {"acme": "key-acme-0123456789", "beta": "key-beta-0123456789"}
SECRETS = {"acme": "whsec_" + "QUNNRS1zZWNyZXQtZm9yLXdlYmhvb2stdGVzdHMtMDE="}  # 32 bytes, base64


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import tiny_llama

    folder = tmp_path_factory.mktemp("tiny-llama")
    lm = tiny_llama()
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def attack_redis(tmp_path_factory) -> Iterator[PrivateRedis]:
    """A private redis-server: the attack stacks flush and fill their databases without touching
    the shared server other suites use."""
    server = PrivateRedis(tmp_path_factory.mktemp("attack-redis"))
    server.start()
    yield server
    server.stop()


class Stack:
    """API + workers + webhook worker on one Redis database; `client(tenant)` speaks as a tenant."""

    def __init__(self, redis_url: str, model_dir: Path, extra_env: dict[str, str] | None = None):
        self.redis_url = redis_url
        self.redis = Redis.from_url(redis_url)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        models = [{"id": MODEL, "source": "dir", "path": str(model_dir), "dtype": "float32", "device": "cpu"}]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_REDIS_URL": redis_url,
                    "LANTERN_LOG_LEVEL": "WARNING", "LANTERN_MODELS": json.dumps(models),
                    "LANTERN_API_KEYS": ",".join(f"{t}={k}" for t, k in KEYS.items()),
                    "LANTERN_WEBHOOK_SECRETS": ",".join(f"{t}={s}" for t, s in SECRETS.items()),
                    "LANTERN_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "LANTERN_WEBHOOK_RETRY_BASE_S": "0.05",
                    "LANTERN_WEBHOOK_TIMEOUT_S": "2", "LANTERN_RATE_LIMIT_PER_S": "100000",
                    "LANTERN_RATE_LIMIT_BURST_PER_MIN": "1000000", "LANTERN_MAX_ACTIVE_JOBS": "1000",
                    "LANTERN_AUTH_FAILURES_PER_MIN": "1000000",  # the matrix sends wrong keys on purpose
                    "LANTERN_WORKER_HEARTBEAT_TTL_S": "4", "LANTERN_REAPER_INTERVAL_S": "1",
                    "LANTERN_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", **(extra_env or {})}
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.hook_worker: subprocess.Popen | None = None

    def client(self, tenant: str | None = "acme", **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kw)

    def start_api(self) -> None:
        self.api = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(self.port)],
                                    cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.base_url, timeout=5) as c:
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or self.api.poll() is not None:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)

    def start_worker(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "workers.main", "--model", MODEL, "--metrics-port", "0"],
                                cwd=ROOT, env=self.env)
        self.workers.append(proc)
        return proc

    def start_webhook_worker(self) -> None:
        self.hook_worker = subprocess.Popen([sys.executable, "-m", "delivery.webhook_worker", "--metrics-port", "0"],
                                            cwd=ROOT, env=self.env)

    def start_all(self) -> None:
        """API, one model worker and the webhook worker, ready when the worker is live."""
        self.start_api()
        self.start_worker()
        self.start_webhook_worker()
        self.wait_workers(1)

    def live_workers(self) -> int:
        with self.client() as c:
            return next(m["workers"] for m in c.get("/v1/models").json()["models"] if m["id"] == MODEL)

    def wait_workers(self, n: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.live_workers() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} live workers")
            time.sleep(0.3)

    def wait(self, job_id: str, tenant: str = "acme", timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.client(tenant) as c:
            while time.monotonic() < deadline:
                view = c.get(f"/v1/jobs/{job_id}").json()
                if view.get("status") in ("finished", "failed", "canceled"):
                    return view
                time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {view.get('status')}")

    def stop(self) -> None:
        procs = [p for p in [*self.workers, self.hook_worker, self.api] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def gen(prompt: str = "The capital of France is", tokens: int = 2, **extra) -> dict:
    return {"kind": "generate", "model": MODEL, "input": {"prompt": prompt},
            "params": {"max_new_tokens": tokens}, **extra}


@pytest.fixture(scope="session")
def stack(attack_redis, tiny_model_dir) -> Iterator[Stack]:
    """API + one tiny-llama worker + the webhook worker on database 1 of the private Redis."""
    s = Stack(attack_redis.url(1), tiny_model_dir)
    try:
        s.start_all()
        yield s
    finally:
        s.stop()
