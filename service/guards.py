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
- Admission: the Idempotency-Key, the slot and the queue depth of a submit are one script
  (`Guards.admit`). A submit stages its enqueue before the script in the same MULTI
  (`Guards.stage_admission`, service/submission.py): the whole submit is one round trip, and a
  refusal takes the staged job back out before any worker can see it.
- Failed authentications: per client address, at most `auth_failures_per_min` wrong API keys in a
  window of `AUTH_WINDOW_S` (from the first failure); beyond, every request from that address that
  presents a key is 429 with `Retry-After` until the window ends, a right key included (else the
  answer would still tell a right guess from a wrong one).
- The gate (`Guards.gate_async`): with API keys, the failed-key look-up of the address and the
  tenant's rate windows are one script, run by the auth middleware on every request with a key; a
  request over the rate never reaches the app. In open mode the `owner` dependency counts the rate.
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
# A refusal undoes the earlier steps, and a staged enqueue (ARGV[10] = '1': the commands before this
# script in its MULTI pushed the job onto the queue and wrote KEYS[4..]): the job leaves the queue
# (LREM from the tail, where it is) and KEYS[4..] (its RQ hash, its webhook secret) are deleted.
# A staged job already holding its slot is this transaction sent again (redis-py retries a pipeline
# whose reply was lost): the first run admitted it, so the second push is dropped and nothing else is
# undone (else an Idempotency-Key would read as a replay and delete the job the first run enqueued).
# KEYS: idempotency key, slot set, queue, staged keys. ARGV: job id, record, record TTL, now, limit
# (0: no slot), slot TTL, grace, RQ job key prefix, max depth (0: no check), staged. Returns
# {'ok', n}, {'replay', earlier record}, {'busy', live}, {'full', depth}.
_ADMIT = """
local idem, slots, queue, job_id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now, limit, ttl, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_depth, staged = tonumber(ARGV[9]), ARGV[10] == '1'
local function refuse(outcome, value)
  if staged then
    redis.call('LREM', queue, -1, job_id)
    for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
  end
  return {outcome, value}
end
if staged and limit > 0 and redis.call('ZSCORE', slots, job_id) then
  -- this very transaction ran before (a client retry after a lost EXEC reply sends it again): it was
  -- admitted then, so only the second push goes
  redis.call('LREM', queue, -1, job_id)
  return {'ok', redis.call('ZCARD', slots)}
end
if idem ~= '' and not redis.call('SET', idem, ARGV[2], 'NX', 'EX', ARGV[3]) then
  return refuse('replay', redis.call('GET', idem))
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
      return refuse('busy', n)
    end
  end
  redis.call('ZADD', slots, now, job_id)
  redis.call('EXPIRE', slots, ttl)
  n = n + 1
end
if max_depth > 0 then
  local depth = redis.call('LLEN', queue) - (staged and 1 or 0)
  if depth >= max_depth then
    if limit > 0 then redis.call('ZREM', slots, job_id) end
    if idem ~= '' then redis.call('DEL', idem) end
    return refuse('full', depth)
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

# The gate. KEYS[1]: an address's failure counter; KEYS[2], KEYS[3] (absent for a wrong key): the
# tenant's counters of the current 1 s and 60 s windows. ARGV: 1 = this attempt failed (count it),
# the window seconds, the allowance, the two rate TTLs. A wrong key is counted; a right one looks the
# address up and, unless the address is blocked, counts the tenant's rate. Returns {failures in the
# window, seconds left in it[, 1 s count, 60 s count]}.
_GATE = """
local n
if ARGV[1] == '1' then
  n = redis.call('INCR', KEYS[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local out = {n, redis.call('TTL', KEYS[1])}
if #KEYS == 3 and n < tonumber(ARGV[3]) then
  for i = 2, 3 do
    out[i + 1] = redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ARGV[i + 2])
  end
end
return out
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


@dataclass
class Gate:
    """The gate's verdict on a request with an API key: `wait_s` > 0, its address is blocked for that
    long (429); `over_rate`, the tenant's rate-limit problem (429)."""

    wait_s: int = 0
    over_rate: ProblemError | None = None


@dataclass
class Admission:
    """What `stage_admission` queued on a pipeline: where its answer is and how to read it."""

    index: int  # of the script's answer among the pipeline's results
    tenant: str
    key: str | None
    job_id: str
    fingerprint: str
    model: str


class Guards:
    """The guards on `connection`; the rate limit and the gate also have awaitable forms on `aio`
    (service/aio_redis.py), for the steps that run on the event loop."""

    def __init__(self, connection: Redis, settings: Settings, aio: LoopRedis | None = None):
        self.redis = connection
        self.settings = settings
        self.aio = aio
        self._rate = connection.register_script(_RATE)
        self._gate = connection.register_script(_GATE)

    # -- rate ---------------------------------------------------------------------------------
    def _rate_windows(self) -> tuple[tuple[int, int], ...]:
        return (1, self.settings.rate_limit_per_s), (60, self.settings.rate_limit_burst_per_min)

    def _rate_script_args(self, tenant: str, now: float) -> dict:
        windows = [w for w, _ in self._rate_windows()]
        return {"keys": [_rate_key(tenant, w, int(now // w)) for w in windows], "args": [w + 1 for w in windows]}

    def _rate_problem(self, counts: list, now: float) -> ProblemError | None:
        for (window, limit), count in zip(self._rate_windows(), counts):
            if count > limit:
                retry = max(1, int(window - now % window + 0.999))
                return ProblemError(429, "rate-limited", "Too many requests",
                                    f"over {limit} requests per {window} s for this tenant",
                                    headers={"Retry-After": str(retry)})
        return None

    def rate(self, tenant: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if problem := self._rate_problem(self._rate(**self._rate_script_args(tenant, now)), now):
            raise problem

    async def rate_async(self, tenant: str) -> None:
        """`rate` on the event loop (on `aio`; without it, on the thread pool)."""
        if self.aio is None:
            return await run_in_threadpool(self.rate, tenant)
        now = time.time()
        if problem := self._rate_problem(await self.aio.script(_RATE)(**self._rate_script_args(tenant, now)), now):
            raise problem

    # -- the gate: failed authentications and the rate ---------------------------------------------
    async def gate_async(self, address: str, tenant: str | None) -> Gate:
        """One round trip for a request that presents a key: `tenant` None (a wrong key) counts a
        failure of `address`; a tenant looks the address up and counts the tenant's rate unless the
        address is blocked. (On the thread pool without `aio`.)"""
        now, allowed = time.time(), self.settings.auth_failures_per_min
        rate = self._rate_script_args(tenant or "", now)
        keys = [_auth_failures_key(address), *(rate["keys"] if tenant is not None else [])]
        args = [int(tenant is None), AUTH_WINDOW_S, allowed, *rate["args"]]
        if self.aio is None:
            out = await run_in_threadpool(self._gate, keys=keys, args=args)
        else:
            out = await self.aio.script(_GATE)(keys=keys, args=args)
        n, ttl, counts = out[0], out[1], out[2:]
        if n > allowed if tenant is None else n >= allowed:
            return Gate(wait_s=max(1, int(ttl)))
        return Gate(over_rate=self._rate_problem(counts, now) if counts else None)

    # -- admission: idempotency, concurrency, queue depth -----------------------------------------
    def stage_admission(self, pipe, tenant: str, key: str | None, body: dict, queue: tuple[str, str] | None = None,
                        slot: bool = True, job_id: str | None = None, staged: list[str] | None = None,
                        now: float | None = None) -> Admission:
        """Queue the admission script on `pipe` (a pipeline, sync or asyncio; `claim` reads its
        answer). `staged`: the keys the commands queued before it on `pipe`, in the same MULTI, wrote
        for job `job_id`, which they pushed onto `queue`'s list: a refusal takes them back."""
        job_id = job_id or uuid.uuid4().hex
        rkey = fp = record = ""
        if key is not None:
            if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
                raise ProblemError(400, "bad-idempotency-key", "The Idempotency-Key is invalid",
                                   f"give 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
            rkey, fp = _idem_key(tenant, key), fingerprint(body)
            record = json.dumps({"fp": fp, "job": job_id})
        s = self.settings
        model, queue_key = queue or ("", "")
        # EVAL, not EVALSHA: a pipeline would check SCRIPT EXISTS first (one more round trip)
        pipe.eval(_ADMIT, 3 + len(staged or []), rkey, active_jobs_key(tenant), queue_key, *(staged or []),
                  job_id, record, s.idempotency_ttl_s, time.time() if now is None else now,
                  s.max_active_jobs if slot else 0, s.queued_ttl_s + 3600, SLOT_GRACE_S, "rq:job:",
                  s.max_queue_depth if queue else 0, int(staged is not None))
        return Admission(len(pipe) - 1, tenant, rkey or None, job_id, fp, model)

    def claim_of(self, admission: Admission, results: list) -> Claim:
        """The admission's verdict from the pipeline's `results`: the claim, or the 422/429/503."""
        outcome, value = results[admission.index]
        if outcome == b"replay":
            earlier = json.loads(value)
            if earlier["fp"] != admission.fingerprint:
                raise ProblemError(422, "idempotency-key-reused", "The Idempotency-Key was used with another body",
                                   "an earlier request with this Idempotency-Key had a different body; use a new key")
            return Claim(admission.key, earlier["job"], replay=True)
        s = self.settings
        if outcome == b"busy":
            raise ProblemError(429, "too-many-active-jobs", "Too many jobs in progress",
                               f"{value} jobs are queued or running for this tenant, at max_active_jobs="
                               f"{s.max_active_jobs}", headers={"Retry-After": "5"})
        if outcome == b"full":
            raise ProblemError(503, "queue-full", "The queue is full",
                               f"{value} jobs wait for {admission.model}, at max_queue_depth="
                               f"{s.max_queue_depth}", headers={"Retry-After": "10"})
        return Claim(admission.key, admission.job_id)

    def admit(self, tenant: str, key: str | None, body: dict, queue: tuple[str, str] | None = None,
              slot: bool = True, now: float | None = None) -> Claim:
        """The admission steps alone, in one atomic round trip (see `_ADMIT`): claim the
        Idempotency-Key (a replay returns the earlier job), take a `max_active_jobs` slot (else 429),
        check the depth of `queue` = (model, its RQ queue key) (else 503). A refusal gives back what
        the earlier steps took; after a success, `give_back` does."""
        if key is None and not slot and queue is None:
            return Claim(None, uuid.uuid4().hex)
        with self.redis.pipeline(transaction=False) as pipe:
            admission = self.stage_admission(pipe, tenant, key, body, queue, slot, now=now)
            return self.claim_of(admission, pipe.execute())

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
