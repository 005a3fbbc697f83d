"""Signed webhook delivery (Standard Webhooks), from a separate queue, by a light worker.

The model worker only *enqueues* a delivery when a job changes state (common/webhook_queue.py, a Redis RPUSH):
no network call ever runs on its hot path. `python -m delivery.webhook_worker` (no torch) takes
deliveries from `lantern:webhooks` and POSTs them:

- Signature per https://www.standardwebhooks.com: headers `webhook-id` (stable across retries,
  so receivers deduplicate), `webhook-timestamp` (of the attempt) and `webhook-signature`
  (`v1,` + base64 HMAC-SHA256 over `id.timestamp.body` with the base64-decoded `whsec_` secret).
  The secret is the job's own (kept in its own Redis key, not in the payload) or the tenant's
  configured one (`LANTERN_WEBHOOK_SECRETS`).
- Thin body: `{"type": "job.<event>", "timestamp", "data": {id, kind, model, status, links,
  error?, result? (only when under webhook_max_result_bytes)}}`.
- Retries with exponential backoff and full jitter on timeouts, connection errors, 5xx and 429
  (`Retry-After` honoured, capped); other 4xx and 3xx stop (redirects are never followed). The
  receiver's body is never read into logs or stored: only its status code.
- SSRF: the URL is re-resolved and re-checked (common/webhook_urls.py) on every attempt, and the
  request goes to the checked address (Host header and TLS SNI keep the name), so a DNS answer
  that changes between check and connect cannot redirect it.
"""

from __future__ import annotations

import json
import logging
import random
import time
from email.utils import parsedate_to_datetime

import httpx
from prometheus_client import Counter, Histogram
from redis import Redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus

from common.tenants import parse_secrets  # the same `tenant=secret` format as the API
from common.webhook_events import message_id  # noqa: F401  (re-exported)
from common.webhook_queue import WebhookSettings
from common.webhook_signature import sign
from common.webhook_urls import UnsafeURL, check_url, parse_networks
from schemas.keys import WEBHOOK_QUEUE, WEBHOOK_RETRIES, webhook_secret_key, webhook_status_key

log = logging.getLogger("lantern.webhooks")
TERMINAL = ("finished", "failed", "canceled")

DELIVERIES = Counter("lantern_webhook_deliveries_total", "Webhook delivery attempts by outcome", ["outcome"])
DELIVERY_SECONDS = Histogram("lantern_webhook_delivery_seconds", "Time of one webhook attempt",
                             buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def _status(connection: Redis, job_id: str) -> JobStatus | None:
    """The job's status through RQ's own key scheme (one HGET), None when the job is gone."""
    try:
        return Job(job_id, connection=connection).get_status()
    except InvalidJobOperation:
        return None


# -- consumer side (webhook worker) ---------------------------------------------------------------
def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff(attempt: int, settings: WebhookSettings, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempt + 1`: full jitter over base·2^(attempt-1), or Retry-After."""
    if retry_after is not None:
        return min(settings.webhook_retry_max_s, retry_after)
    ceiling = min(settings.webhook_retry_max_s, settings.webhook_retry_base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Deliverer:
    """One delivery attempt at a time; `handle(entry)` decides: done, retry later, or give up."""

    def __init__(self, connection: Redis, settings: WebhookSettings | None = None, resolve=None):
        self.redis = connection
        self.settings = settings or WebhookSettings()
        self.networks = parse_networks(self.settings.webhook_allowed_networks)
        self.tenant_secrets = parse_secrets(self.settings.webhook_secrets)
        self.resolve = resolve
        self.client = httpx.Client(follow_redirects=False, timeout=self.settings.webhook_timeout_s,
                                   headers={"user-agent": "lantern-webhooks/1"})

    def secret_for(self, entry: dict) -> str | None:
        own = self.redis.get(webhook_secret_key(entry["job"]))
        return own.decode() if own else self.tenant_secrets.get(entry["owner"])

    def _record(self, entry: dict, outcome: str, status: int | None, reason: str) -> None:
        DELIVERIES.labels(outcome).inc()
        self.redis.set(webhook_status_key(entry["id"]), json.dumps({"outcome": outcome, "attempts": entry["attempt"],
                                                            "status": status, "reason": reason[:300]}),
                       ex=self.settings.webhook_status_ttl_s)

    def _schedule(self, entry: dict, delay: float) -> None:
        self.redis.zadd(WEBHOOK_RETRIES, {json.dumps(entry): time.time() + delay})

    def attempt(self, entry: dict) -> tuple[str, int | None, str, float | None]:
        """POST once. (outcome: delivered | retry | failed | refused, status, reason, retry_after)."""
        secret = self.secret_for(entry)
        if secret is None:
            return "failed", None, "no webhook secret for the job or its tenant", None
        try:
            kw = {} if self.resolve is None else {"resolve": self.resolve}
            target = check_url(entry["url"], self.networks, **kw)
        except UnsafeURL as e:
            return "refused", None, str(e), None
        timestamp = int(time.time())
        host = f"[{target.address}]" if ":" in target.address else target.address
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        headers = {"content-type": "application/json", "host": host_header, "webhook-id": entry["id"],
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(secret, entry["id"], timestamp, entry["body"])}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        t0 = time.perf_counter()
        try:
            with self.client.stream("POST", f"{target.scheme}://{host}:{target.port}{target.path}",
                                    content=entry["body"].encode(), headers=headers, extensions=extensions) as r:
                status = r.status_code  # the receiver's body is never read
                retry_after = _retry_after(r)
        except httpx.TimeoutException:
            return "retry", None, "timeout", None
        except httpx.HTTPError as e:
            return "retry", None, f"{type(e).__name__}", None
        finally:
            DELIVERY_SECONDS.observe(time.perf_counter() - t0)
        if 200 <= status < 300:
            return "delivered", status, "ok", None
        if status == 429 or status >= 500:
            return "retry", status, f"HTTP {status}", retry_after
        if 300 <= status < 400:
            return "failed", status, f"HTTP {status}: redirects are not followed", None
        return "failed", status, f"HTTP {status}", None

    def handle(self, entry: dict) -> str:
        if entry["event"] in TERMINAL and time.time() - entry["created"] < 10:
            # run_job returned but RQ has not yet stored the job's end: wait, so that a receiver
            # that fetches the job on our call sees the status we announce.
            if _status(self.redis, entry["job"]) == JobStatus.STARTED:
                self._schedule(entry, 0.2)
                return "waiting"
        entry["attempt"] += 1
        outcome, status, reason, retry_after = self.attempt(entry)
        if outcome == "retry" and entry["attempt"] < self.settings.webhook_max_attempts:
            delay = backoff(entry["attempt"], self.settings, retry_after)
            self._schedule(entry, delay)
            self._record(entry, "retry", status, reason)
            log.info("webhook %s attempt %d: %s; retry in %.2fs", entry["id"], entry["attempt"], reason, delay)
            return "retry"
        if outcome == "retry":
            outcome = "failed"
        self._record(entry, outcome, status, reason)
        if outcome != "delivered":
            log.warning("webhook %s for job %s %s after %d attempts: %s", entry["id"], entry["job"], outcome,
                        entry["attempt"], reason)
        return outcome


def promote_due(connection: Redis, now: float | None = None, limit: int = 100) -> int:
    """Move retries whose time has come back onto the delivery queue (safe with several workers)."""
    now = time.time() if now is None else now
    moved = 0
    for raw in connection.zrangebyscore(WEBHOOK_RETRIES, 0, now, start=0, num=limit):
        if connection.zrem(WEBHOOK_RETRIES, raw):  # only the worker that removed it moves it
            connection.rpush(WEBHOOK_QUEUE, raw)
            moved += 1
    return moved
