"""Fixtures of the integration tests: a private redis-server per module, for tests that need a
keyspace nobody else touches (other suites share the server on 6379), and the API as a
subprocess on it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from redis import Redis

from tests.conftest import ROOT, free_port
from tests.redis_server import PrivateRedis


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class ApiProcess:
    """`lantern api` as a subprocess on a database of the private Redis, reached over real HTTP
    (uvicorn, its thread pool, real sockets): for races and middleware behaviour that an
    in-process TestClient would not show."""

    def __init__(self, redis_url: str, env: dict[str, str]):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_REDIS_URL": redis_url,
                    "LANTERN_LOG_LEVEL": "WARNING", **env}
        self.args = [sys.executable, "-m", "service.cli", "api", "--port", str(self.port)]
        self.cwd = ROOT
        self.proc = None

    def __enter__(self) -> ApiProcess:
        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.base_url, timeout=5) as c:
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("the API did not start")
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def api_process(private_redis):
    """`api_process(db, **env)`: an ApiProcess context on database `db` of the private Redis
    (flushed first)."""
    def make(db: int, **env: str) -> ApiProcess:
        Redis.from_url(private_redis.url(db)).flushdb()
        return ApiProcess(private_redis.url(db), env)

    return make
