"""The producer side of webhooks: the settings, and `notify`, which enqueues a delivery when a job
changes state (one Redis RPUSH; the model worker and the reaper call it, delivery/webhooks.py sends)."""

from __future__ import annotations

import json
import logging

from pydantic import Field
from redis import Redis

from common.settings import ProcessSettings
from common.webhook_events import build_entry
from schemas.keys import WEBHOOK_QUEUE

log = logging.getLogger("lantern.webhooks")


class WebhookSettings(ProcessSettings):
    webhook_timeout_s: float = Field(5.0, gt=0, description="connect + read timeout of one attempt")
    webhook_max_attempts: int = Field(8, ge=1, description="attempts before a delivery is given up")
    webhook_retry_base_s: float = Field(1.0, gt=0, description="first backoff; doubles each attempt, full jitter")
    webhook_retry_max_s: float = Field(600.0, gt=0, description="cap on one backoff and on a honoured Retry-After")
    webhook_max_result_bytes: int = Field(16 * 1024, ge=0, description="results up to this size ride in the body")
    webhook_status_ttl_s: int = Field(7 * 24 * 3600, ge=60)


def notify(connection: Redis, job, event: str, result: dict | None = None, error: dict | None = None,
           settings: WebhookSettings | None = None) -> bool:
    """Enqueue a delivery of `event` for `job` if its request asked for one. Never raises."""
    try:
        if job is None:
            return False
        settings = settings or WebhookSettings()
        payload = (job.args or [{}])[0]
        entry = build_entry(job.id, job.meta.get("owner", "anonymous"), payload, event, result, error,
                            settings.webhook_max_result_bytes)
        if entry is None:
            return False
        connection.rpush(WEBHOOK_QUEUE, json.dumps(entry, allow_nan=False))
        return True
    except Exception:
        log.exception("could not enqueue the %s webhook of job %s", event, getattr(job, "id", "?"))
        return False
