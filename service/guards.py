"""Per-tenant rate and concurrency limits and `Idempotency-Key`, all kept in Redis (any number of
API replicas share them; every key expires, so memory stays bounded).

- Rate: fixed windows of 1 s (`rate_limit_per_s`) and 60 s (`rate_limit_burst_per_min`) per
  tenant; over either is 429 with `Retry-After` = seconds to the window's end.
- Concurrency: a tenant's queued + running jobs (`max_active_jobs`); over it submit is 429. Each
  slot is an entry of a sorted set (`schemas.keys.active_jobs_key`: job id scored by the time it
  took the slot). One Lua script checks and records a slot atomically, so concurrent submits on any
  number of replicas can never overshoot the limit. Whatever ends a job gives its slot back (the
  worker's `run_job`, a cancel, the reaper); and when the set is at the limit, the same script first
  prunes entries whose RQ job has ended or is gone (expired), so a missed release leaks nothing (under
  the limit an extra entry refuses nothing, and the check stays one ZCARD). An entry whose job hash
  does not exist yet is a submit in progress and counts until `SLOT_GRACE_S` has passed.
- Admission: the Idempotency-Key, the slot and the queue depth of a submit are one script, one
  round trip (`Guards.admit`).
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
from starlette.concurrency import run_in_threadpool

from schemas.keys import active_jobs_key
from service.aio_redis import LoopRedis
from service.config import Settings
from service.problems import ProblemError

PREFIX = "lantern"
MAX_IDEMPOTENCY_KEY = 255
AUTH_WINDOW_S = 60
SLOT_GRACE_S = 60  # a slot whose job hash never appeared (the submit died) is free after this

# One script for the admission steps of a submit, so they cost one round trip and happen atomically
# (nothing can slip in between a claimed key, a taken slot and the depth check):
#   1. Idempotency-Key (when KEYS[1] is not ''): SET NX the record, or return the earlier one;
#   2. a `max_active_jobs` slot (when ARGV[5] > 0): under the limit, record the job in the tenant's
#      sorted set; at the limit, first prune entries whose RQ job has ended or is gone (past the
#      grace), then decide. The RQ job hashes it reads are keys not in KEYS: fine on one Redis, not
#      a cluster;
#   3. the queue depth (when ARGV[9] > 0): LLEN of the model's queue against max_queue_depth.
# A refusal at step 2 or 3 undoes the earlier steps. KEYS: idempotency key, slot set, queue.
# ARGV: job id, record, record TTL, now, limit (0: no slot), slot TTL, grace, RQ job key prefix,
# max depth (0: no check). Returns {'ok', n}, {'replay', earlier record}, {'busy', live},
# {'full', depth}.
_ADMIT = """
local idem, slots, queue, job_id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now, limit, ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_depth = tonumber(ARGV[9])
if idem ~= '' and not redis.call('SET', idem, ARGV[2], 'NX', 'EX', ARGV[3]) then
  return {'replay', redis.call('GET', idem)}
end
local n = 0
if limit > 0 then
  n = redis.call('ZCARD', slots)
  if n >= limit then
    local ended = {finished = true, failed = true, stopped = true, canceled = true}
    local entries = redis.call('ZRANGE', slots, 0, -1, 'WITHSCORES')
    n = 0
    for i = 1, #entries, 2 do
      local id, since = entries[i], tonumber(entries[i + 1])
      local status = redis.call('HGET', ARGV[8] .. id, 'status')
      if id == job_id then
        -- already holds a slot: counted below
      elseif status then
        if ended[status] then redis.call('ZREM', slots, id) else n = n + 1 end
      elseif now - since > grace then
        redis.call('ZREM', slots, id)
      else
        n = n + 1
      end
    end
    if n >= limit then
      if idem ~= '' then redis.call('DEL', idem) end
      return {'busy', n}
    end
  end
  redis.call('ZADD', slots, now, job_id)
  redis.call('EXPIRE', slots, ttl)
  n = n + 1
end
if max_depth > 0 then
  local depth = redis.call('LLEN', queue)
  if depth >= max_depth then
    if limit > 0 then redis.call('ZREM', slots, job_id) end
    if idem ~= '' then redis.call('DEL', idem) end
    return {'full', depth}
  end
end
return {'ok', n}
"""

# KEYS: the tenant's counters of the current 1 s and 60 s windows. ARGV: their TTLs. Returns the counts.
_RATE = """
local counts = {}
for i = 1, 2 do
  counts[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[i])
end
return counts
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
    """The guards on `connection`; the rate limit and the failed-authentication look-up also have
    awaitable forms on `aio` (service/aio_redis.py), for the steps that run on the event loop."""

    def __init__(self, connection: Redis, settings: Settings, aio: LoopRedis | None = None):
        self.redis = connection
        self.settings = settings
        self.aio = aio
        self._admit = connection.register_script(_ADMIT)
        self._rate = connection.register_script(_RATE)
        self._auth_failures = connection.register_script(_AUTH_FAILURES)

    # -- rate ---------------------------------------------------------------------------------
    def _rate_windows(self) -> tuple[tuple[int, int], ...]:
        return (1, self.settings.rate_limit_per_s), (60, self.settings.rate_limit_burst_per_min)

    def _rate_script_args(self, tenant: str, now: float) -> dict:
        windows = [w for w, _ in self._rate_windows()]
        return {"keys": [_rate_key(tenant, w, int(now // w)) for w in windows], "args": [w + 1 for w in windows]}

    def _rate_verdict(self, counts: list, now: float) -> None:
        for (window, limit), count in zip(self._rate_windows(), counts):
            if count > limit:
                retry = max(1, int(window - now % window + 0.999))
                raise ProblemError(429, "rate-limited", "Too many requests",
                                   f"over {limit} requests per {window} s for this tenant",
                                   headers={"Retry-After": str(retry)})

    def rate(self, tenant: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._rate_verdict(self._rate(**self._rate_script_args(tenant, now)), now)

    async def rate_async(self, tenant: str) -> None:
        """`rate` on the event loop (on `aio`; without it, on the thread pool)."""
        if self.aio is None:
            return await run_in_threadpool(self.rate, tenant)
        now = time.time()
        self._rate_verdict(await self.aio.script(_RATE)(**self._rate_script_args(tenant, now)), now)

    # -- failed authentications ---------------------------------------------------------------
    def _auth_verdict(self, n: int, ttl: int, failed: bool) -> int:
        allowed = self.settings.auth_failures_per_min
        blocked = n > allowed if failed else n >= allowed
        return max(1, int(ttl)) if blocked else 0

    def authentication(self, address: str, failed: bool) -> int:
        """Count a failed authentication from `address` (`failed`) or look up its count; returns
        0 to go on, else the seconds the address must wait (a 429's `Retry-After`)."""
        n, ttl = self._auth_failures(keys=[_auth_failures_key(address)], args=[int(failed), AUTH_WINDOW_S])
        return self._auth_verdict(n, ttl, failed)

    async def authentication_async(self, address: str, failed: bool) -> int:
        """`authentication` on the event loop (on `aio`; without it, on the thread pool)."""
        if self.aio is None:
            return await run_in_threadpool(self.authentication, address, failed)
        script = self.aio.script(_AUTH_FAILURES)
        n, ttl = await script(keys=[_auth_failures_key(address)], args=[int(failed), AUTH_WINDOW_S])
        return self._auth_verdict(n, ttl, failed)

    # -- admission: idempotency, concurrency, queue depth -----------------------------------------
    def admit(self, tenant: str, key: str | None, body: dict, queue: tuple[str, str] | None = None,
              slot: bool = True, now: float | None = None) -> Claim:
        """The admission steps of a submit in one atomic round trip (see `_ADMIT`): claim the
        Idempotency-Key (a replay returns the earlier job), take a `max_active_jobs` slot (else 429),
        check the depth of `queue` = (model, its RQ queue key) (else 503). A refusal gives back what
        the earlier steps took; after a success, `give_back` does."""
        job_id = uuid.uuid4().hex
        if key is None and not slot and queue is None:
            return Claim(None, job_id)
        rkey = fp = record = ""
        if key is not None:
            if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
                raise ProblemError(400, "bad-idempotency-key", "The Idempotency-Key is invalid",
                                   f"give 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
            rkey, fp = _idem_key(tenant, key), fingerprint(body)
            record = json.dumps({"fp": fp, "job": job_id})
        s = self.settings
        model, queue_key = queue or ("", "")
        max_depth = s.max_queue_depth if queue else 0
        outcome, value = self._admit(
            keys=[rkey, active_jobs_key(tenant), queue_key],
            args=[job_id, record, s.idempotency_ttl_s, time.time() if now is None else now,
                  s.max_active_jobs if slot else 0, s.queued_ttl_s + 3600, SLOT_GRACE_S, "rq:job:", max_depth])
        if outcome == b"replay":
            earlier = json.loads(value)
            if earlier["fp"] != fp:
                raise ProblemError(422, "idempotency-key-reused", "The Idempotency-Key was used with another body",
                                   "an earlier request with this Idempotency-Key had a different body; use a new key")
            return Claim(rkey, earlier["job"], replay=True)
        if outcome == b"busy":
            raise ProblemError(429, "too-many-active-jobs", "Too many jobs in progress",
                               f"{value} jobs are queued or running for this tenant, at max_active_jobs="
                               f"{s.max_active_jobs}", headers={"Retry-After": "5"})
        if outcome == b"full":
            raise ProblemError(503, "queue-full", "The queue is full",
                               f"{value} jobs wait for {model}, at max_queue_depth="
                               f"{s.max_queue_depth}", headers={"Retry-After": "10"})
        return Claim(rkey or None, job_id)

    def claim(self, tenant: str, key: str | None, body: dict) -> Claim:
        """The Idempotency-Key step alone."""
        return self.admit(tenant, key, body, slot=False)

    def release_slot(self, tenant: str, job_id: str) -> None:
        """The job ended (or was never enqueued): its slot is free."""
        self.redis.zrem(active_jobs_key(tenant), job_id)

    def release(self, claim: Claim) -> None:
        """The submit failed: forget the key so a retry can use it."""
        if claim.key is not None and not claim.replay:
            self.redis.delete(claim.key)

    def give_back(self, tenant: str, claim: Claim) -> None:
        """Undo an `admit` whose job was not enqueued: the slot and the key, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(active_jobs_key(tenant), claim.job_id)
            if claim.key is not None and not claim.replay:
                pipe.delete(claim.key)
            pipe.execute()
