"""Where a worker's Prometheus endpoint listens. Like the API: on loopback unless told otherwise.

`LANTERN_METRICS_HOST` sets the address (the images set 0.0.0.0, so a scraper in another container
or pod reaches it); without it `LANTERN_HOST` (the API's bind address), else 127.0.0.1. Used by
the model worker (workers/main.py) and the webhook worker (delivery/webhook_worker.py); no torch.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from common.settings import ProcessSettings

DEFAULT_HOST = "127.0.0.1"


def metrics_host() -> str:
    """LANTERN_METRICS_HOST, else LANTERN_HOST (where the API binds), else loopback."""
    return ProcessSettings().metrics_bind


def serve(host: str, port: int, log: logging.Logger) -> bool:
    """Start the metrics endpoint on host:port (port 0: off). False when it could not bind (several
    workers on one host: the first keeps the port, the others run without metrics)."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        log.warning("metrics on %s:%d unavailable (%s); metrics off for this process", host, port, e)
        return False
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True
