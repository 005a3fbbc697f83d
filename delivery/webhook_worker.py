"""The webhook worker: delivers signed webhooks and reaps jobs of dead model workers. No model, no torch.

    python -m delivery.webhook_worker [--concurrency 4] [--metrics-port 9102]
    lantern webhook-worker ...

Each thread moves a delivery from `lantern:webhooks` to this worker's processing list (BLMOVE),
attempts it, and drops it from the list; a retry waits in a sorted set until its time. If the
worker dies mid-delivery, the next worker to start finds the processing list of a worker with no
heartbeat and puts its deliveries back (the receiver deduplicates by `webhook-id`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

from redis import Redis

from common.metrics_server import metrics_host, serve
from common.registry import load_registry
from common.settings import ProcessSettings
from common.sweeps import finalize_open
from common.webhook_queue import WebhookSettings
from delivery import reaper
from delivery.webhooks import Deliverer, promote_due
from schemas.keys import WEBHOOK_QUEUE, webhook_processing_key, webhook_worker_key

log = logging.getLogger("lantern.webhooks")
HEARTBEAT_TTL_S = 15


def recover_orphans(connection: Redis) -> int:
    """Deliveries held by webhook workers that have no heartbeat go back on the queue."""
    moved = 0
    for key in connection.scan_iter(match=webhook_processing_key("*"), count=100):
        name = key.decode().rsplit(":", 1)[-1]
        if connection.exists(webhook_worker_key(name)):
            continue
        while connection.lmove(key, WEBHOOK_QUEUE, "LEFT", "RIGHT") is not None:
            moved += 1
    return moved


def _deliver_loop(connection: Redis, name: str, settings: WebhookSettings, stop: threading.Event) -> None:
    deliverer = Deliverer(connection, settings)
    processing = webhook_processing_key(name)
    while not stop.is_set():
        try:
            raw = connection.blmove(WEBHOOK_QUEUE, processing, 1, "LEFT", "RIGHT")
            if raw is None:
                continue
            try:
                deliverer.handle(json.loads(raw))
            except Exception:
                log.exception("delivery failed unexpectedly; dropped")
            connection.lrem(processing, 1, raw)
        except Exception:  # Redis away: wait and reconnect
            log.warning("Redis unavailable; retrying", exc_info=False)
            stop.wait(1.0)


def _housekeeping(connection: Redis, name: str, models: list[str], stop: threading.Event, interval: float) -> None:
    """Heartbeat and due retries every 0.25 s; orphan recovery, the reaper and the sweeps nobody
    polls (finalized, so their webhook goes out: common/sweeps.py) every `interval`."""
    last = 0.0
    while True:
        try:
            connection.set(webhook_worker_key(name), 1, ex=HEARTBEAT_TTL_S)
            promote_due(connection)
            if time.monotonic() - last >= interval:
                last = time.monotonic()
                recover_orphans(connection)
                reaper.reap(connection, models)
                finalize_open(connection)
        except Exception:
            log.warning("housekeeping pass failed; retrying", exc_info=False)
        if stop.wait(0.25):
            break


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lantern webhook-worker")
    process = ProcessSettings()
    parser.add_argument("--concurrency", type=int, default=process.webhook_concurrency)
    parser.add_argument("--metrics-port", type=int, default=process.webhook_metrics_port, help="0: off")
    parser.add_argument("--metrics-host", default=metrics_host(),
                        help="Prometheus bind address (LANTERN_METRICS_HOST, else LANTERN_HOST, else 127.0.0.1)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=process.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    connection = Redis.from_url(process.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    settings = WebhookSettings()
    serve(args.metrics_host, args.metrics_port, log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    interval = process.reaper_interval_s
    models = list(load_registry())
    threads = [threading.Thread(target=_housekeeping, args=(connection, name, models, stop, interval),
                                daemon=True)]
    threads += [threading.Thread(target=_deliver_loop, args=(connection, f"{name}", settings, stop), daemon=True)
                for _ in range(max(1, args.concurrency))]
    for t in threads:
        t.start()
    log.info("webhook worker %s: %d delivery threads", name, args.concurrency)
    stop.wait()
    for t in threads:
        t.join(timeout=settings.webhook_timeout_s + 2)
    connection.delete(webhook_worker_key(name))


if __name__ == "__main__":
    main()
