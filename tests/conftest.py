"""Shared fixtures: a real Redis, the real bundled models (loaded once per session), tiny random
models, and a running service (API + worker as subprocesses) for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_URL = os.environ.get("LANTERN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
E2E_MODELS = ("smollm2-135m", "minilm-l6")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (CI starts one); database 15 is flushed at the start of the session."""
    from redis import Redis

    r = Redis.from_url(TEST_REDIS_URL)
    r.ping()
    r.flushdb()
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def smollm2():
    from common.registry import load_registry
    from workers.models.loading import load_model

    return load_model(load_registry()["smollm2-135m"])


@pytest.fixture(scope="session")
def minilm():
    from common.registry import load_registry
    from workers.models.loading import load_model

    return load_model(load_registry()["minilm-l6"])


@pytest.fixture(scope="session")
def tiny_llama():
    from tests.tiny import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_gpt2():
    from tests.tiny import tiny_gpt2

    return tiny_gpt2()


@pytest.fixture(scope="session")
def tiny_bert():
    from tests.tiny import tiny_bert

    return tiny_bert()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A running API (and its workers) reached over real HTTP."""

    def __init__(self, base_url: str, env: dict[str, str]):
        self.base_url = base_url
        self.env = env
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.workers: list[subprocess.Popen] = []

    def start_worker(self, *models: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        args = [a for m in models for a in ("--model", m)]
        proc = subprocess.Popen([sys.executable, "-m", "workers.main", *args, "--metrics-port", "0", *extra],
                                cwd=ROOT, env=self.env)
        self.workers.append(proc)
        return proc

    def wait_for_models(self, models: tuple[str, ...], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = {m["id"]: m["workers"] for m in self.http.get("/v1/models").json()["models"]}
            if all(live.get(m, 0) > 0 for m in models):
                return
            if any(p.poll() is not None for p in self.workers):
                raise RuntimeError("a worker exited during start-up")
            time.sleep(0.5)
        raise TimeoutError(f"no live worker for {models}")

    def submit(self, body: dict, **kw) -> httpx.Response:
        return self.http.post("/v1/jobs", json=body, **kw)

    def wait(self, job_id: str, timeout: float = 300, until: tuple[str, ...] = ("finished", "failed", "canceled")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.http.get(f"/v1/jobs/{job_id}").json()
            if view["status"] in until:
                return view
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {view['status']}")

    def run(self, body: dict, timeout: float = 300) -> dict:
        """Submit and wait; the finished view (asserts it finished)."""
        r = self.submit(body)
        assert r.status_code == 202, r.text
        view = self.wait(r.json()["id"], timeout)
        assert view["status"] == "finished", view
        return view


@contextmanager
def running_service(redis_url: str, models: tuple[str, ...], **env_extra: str) -> Iterator[Service]:
    """An API and one worker holding `models`, as subprocesses; `env_extra`: more LANTERN_* settings."""
    port = free_port()
    env = {**os.environ, "LANTERN_REDIS_URL": redis_url, "LANTERN_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT), **env_extra}
    api = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)], cwd=ROOT, env=env)
    svc = Service(f"http://127.0.0.1:{port}", env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if svc.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.2)
        svc.start_worker(*models)
        svc.wait_for_models(models)
        yield svc
    finally:
        for p in [*svc.workers, api]:
            p.terminate()
        for p in [*svc.workers, api]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="session")
def service(redis_url) -> Iterator[Service]:
    """API + one worker holding both bundled models, as subprocesses, on database 15."""
    with running_service(redis_url, E2E_MODELS) as svc:
        yield svc
