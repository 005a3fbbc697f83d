"""Per-tenant rate and concurrency limits and `Idempotency-Key`, all kept in Redis (any number of
API replicas share them; every key expires, so memory stays bounded).

- Rate: fixed windows of 1 s (`rate_limit_per_s`) and 60 s (`rate_limit_burst_per_min`) per
  tenant; over either is 429 with `Retry-After` = seconds to the window's end.
- Concurrency: a tenant's queued + running jobs (`max_active_jobs`); over it submit is 429. The
  set is pruned from the jobs' own status on every check, so a job that ended (or expired, or
  whose worker died) frees its slot without any worker having to report.
- Idempotency (draft-ietf-httpapi-idempotency-key-header): the first successful submit binds
  (tenant, key) to the body's fingerprint and the job id for `idempotency_ttl_s`. The same key
  with the same body answers the same job (`Idempotent-Replayed: true`); with another body, 422;
  while the first request is still being processed, 409. Keys are scoped per tenant, so two
  tenants can use the same key.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

from redis import Redis

from service.config import Settings
from service.problems import ProblemError

PREFIX = "lantern"
ENDED = {b"finished", b"failed", b"stopped", b"canceled"}
MAX_IDEMPOTENCY_KEY = 255


def _rate_key(tenant: str, window: int, slot: int) -> str:
    return f"{PREFIX}:rate:{tenant}:{window}:{slot}"


def _active_key(tenant: str) -> str:
    return f"{PREFIX}:active:{tenant}"


def _idem_key(tenant: str, key: str) -> str:
    return f"{PREFIX}:idem:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"


def fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Claim:
    """An Idempotency-Key claim: `job_id` to use, or `replay` = the job an earlier request made."""

    key: str | None
    job_id: str
    replay: bool = False


class Guards:
    def __init__(self, connection: Redis, settings: Settings):
        self.redis = connection
        self.settings = settings

    # -- rate ---------------------------------------------------------------------------------
    def rate(self, tenant: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        windows = ((1, self.settings.rate_limit_per_s), (60, self.settings.rate_limit_burst_per_min))
        with self.redis.pipeline(transaction=False) as pipe:
            for window, _ in windows:
                key = _rate_key(tenant, window, int(now // window))
                pipe.incr(key)
                pipe.expire(key, window + 1)
            counts = pipe.execute()[::2]
        for (window, limit), count in zip(windows, counts):
            if count > limit:
                retry = max(1, int(window - now % window + 0.999))
                raise ProblemError(429, "rate-limited", "Too many requests",
                                   f"over {limit} requests per {window} s for this tenant",
                                   headers={"Retry-After": str(retry)})

    # -- concurrency ----------------------------------------------------------------------------
    def active(self, tenant: str) -> int:
        key = _active_key(tenant)
        ids = [i.decode() for i in self.redis.zrange(key, 0, -1)]
        if not ids:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses = pipe.execute()
        done = [i for i, s in zip(ids, statuses) if s is None or s in ENDED]
        if done:
            self.redis.zrem(key, *done)
        return len(ids) - len(done)

    def check_concurrency(self, tenant: str) -> None:
        if self.redis.zcard(_active_key(tenant)) < self.settings.max_active_jobs:
            return  # under the limit even counting ended jobs: no need to look at each
        n = self.active(tenant)
        if n >= self.settings.max_active_jobs:
            raise ProblemError(429, "too-many-active-jobs", "Too many jobs in progress",
                               f"{n} jobs are queued or running for this tenant, at max_active_jobs="
                               f"{self.settings.max_active_jobs}", headers={"Retry-After": "5"})

    def track(self, tenant: str, job_id: str) -> None:
        key = _active_key(tenant)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {job_id: time.time()})
            pipe.expire(key, self.settings.queued_ttl_s + 3600)
            pipe.execute()

    # -- idempotency ----------------------------------------------------------------------------
    def claim(self, tenant: str, key: str | None, body: dict) -> Claim:
        job_id = uuid.uuid4().hex
        if key is None:
            return Claim(None, job_id)
        if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise ProblemError(400, "bad-idempotency-key", "The Idempotency-Key is invalid",
                               f"give 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
        rkey = _idem_key(tenant, key)
        fp = fingerprint(body)
        record = json.dumps({"fp": fp, "job": job_id})
        if self.redis.set(rkey, record, nx=True, ex=self.settings.idempotency_ttl_s):
            return Claim(rkey, job_id)
        raw = self.redis.get(rkey)
        if raw is None:  # expired between the two calls: try once more
            return self.claim(tenant, key, body)
        earlier = json.loads(raw)
        if earlier["fp"] != fp:
            raise ProblemError(422, "idempotency-key-reused", "The Idempotency-Key was used with another body",
                               "an earlier request with this Idempotency-Key had a different body; use a new key")
        return Claim(rkey, earlier["job"], replay=True)

    def release(self, claim: Claim) -> None:
        """The submit failed: forget the key so a retry can use it."""
        if claim.key is not None and not claim.replay:
            self.redis.delete(claim.key)
