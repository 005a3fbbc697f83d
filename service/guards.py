"""Per-tenant rate and concurrency limits and `Idempotency-Key`, all kept in Redis (any number of
API replicas share them; every key expires, so memory stays bounded).

- Rate: fixed windows of 1 s (`rate_limit_per_s`) and 60 s (`rate_limit_burst_per_min`) per
  tenant; over either is 429 with `Retry-After` = seconds to the window's end.
- Concurrency: a tenant's queued + running jobs (`max_active_jobs`); over it submit is 429. Each
  slot is an entry of a sorted set (`schemas.keys.active_jobs_key`: job id scored by the time it
  took the slot). One Lua script checks and records a slot atomically, so concurrent submits on any
  number of replicas can never overshoot the limit. Whatever ends a job gives its slot back (the
  worker's `run_job`, a cancel, the reaper); and the same script first prunes entries whose RQ job
  has ended or is gone (expired), so a missed release leaks nothing. An entry whose job hash does
  not exist yet is a submit in progress and counts until `SLOT_GRACE_S` has passed.
- Failed authentications: per client address, at most `auth_failures_per_min` wrong API keys in a
  window of `AUTH_WINDOW_S` (from the first failure); beyond, every request from that address that
  presents a key is 429 with `Retry-After` until the window ends, a right key included (else the
  answer would still tell a right guess from a wrong one).
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

from schemas.keys import active_jobs_key
from service.config import Settings
from service.problems import ProblemError

PREFIX = "lantern"
MAX_IDEMPOTENCY_KEY = 255
AUTH_WINDOW_S = 60
SLOT_GRACE_S = 60  # a slot whose job hash never appeared (the submit died) is free after this

# KEYS[1]: the tenant's slot set. ARGV: job id, now, limit, key TTL, grace, RQ job key prefix.
# Reads the RQ job hashes of the set's members (keys not in KEYS: fine on one Redis, not a cluster).
# Returns {1, n} when the slot was taken (n: active jobs now), {0, n} when the limit is reached.
_ACQUIRE = """
local key, job_id = KEYS[1], ARGV[1]
local now, limit, ttl, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ended = {finished = true, failed = true, stopped = true, canceled = true}
local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local live = 0
for i = 1, #entries, 2 do
  local id, since = entries[i], tonumber(entries[i + 1])
  local status = redis.call('HGET', ARGV[6] .. id, 'status')
  if id == job_id then
    -- already holds a slot: counted below
  elseif status then
    if ended[status] then redis.call('ZREM', key, id) else live = live + 1 end
  elseif now - since > grace then
    redis.call('ZREM', key, id)
  else
    live = live + 1
  end
end
if live >= limit then return {0, live} end
redis.call('ZADD', key, now, job_id)
redis.call('EXPIRE', key, ttl)
return {1, live + 1}
"""

# KEYS[1]: an address's failure counter. ARGV: 1 = this attempt failed (count it), window seconds.
# Returns {failures in the window, seconds left in it}.
_AUTH_FAILURES = """
local n
if ARGV[1] == '1' then
  n = redis.call('INCR', KEYS[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
return {n, redis.call('TTL', KEYS[1])}
"""


def _rate_key(tenant: str, window: int, slot: int) -> str:
    return f"{PREFIX}:rate:{tenant}:{window}:{slot}"


def _auth_failures_key(address: str) -> str:
    return f"{PREFIX}:authfail:{address}"


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
        self._acquire = connection.register_script(_ACQUIRE)
        self._auth_failures = connection.register_script(_AUTH_FAILURES)

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

    # -- failed authentications ---------------------------------------------------------------
    def authentication(self, address: str, failed: bool) -> int:
        """Count a failed authentication from `address` (`failed`) or look up its count; returns
        0 to go on, else the seconds the address must wait (a 429's `Retry-After`)."""
        n, ttl = self._auth_failures(keys=[_auth_failures_key(address)], args=[int(failed), AUTH_WINDOW_S])
        allowed = self.settings.auth_failures_per_min
        blocked = n > allowed if failed else n >= allowed
        return max(1, int(ttl)) if blocked else 0

    # -- concurrency ----------------------------------------------------------------------------
    def acquire_slot(self, tenant: str, job_id: str, now: float | None = None) -> None:
        """Take one of the tenant's `max_active_jobs` slots for `job_id`, or raise 429."""
        now = time.time() if now is None else now
        taken, n = self._acquire(keys=[active_jobs_key(tenant)],
                                 args=[job_id, now, self.settings.max_active_jobs,
                                       self.settings.queued_ttl_s + 3600, SLOT_GRACE_S, "rq:job:"])
        if not taken:
            raise ProblemError(429, "too-many-active-jobs", "Too many jobs in progress",
                               f"{n} jobs are queued or running for this tenant, at max_active_jobs="
                               f"{self.settings.max_active_jobs}", headers={"Retry-After": "5"})

    def release_slot(self, tenant: str, job_id: str) -> None:
        """The job ended (or was never enqueued): its slot is free."""
        self.redis.zrem(active_jobs_key(tenant), job_id)

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
