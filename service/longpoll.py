"""Long polling for `GET /v1/jobs/{id}?wait=S`: hold the request until the job changes.

A waiting request costs one small Redis round trip (HMGET of the job hash's `status` and `meta`,
EXISTS of the cancel flag) every `INTERVAL_S`, run in the thread pool from an async loop, so the
event loop never blocks and a held request costs no thread while it sleeps. The wait ends:

- at once when the job's status changes (queued -> started -> finished/failed/canceled) or a cancel
  is asked for (`cancel_requested`), and at once if the job has already ended;
- on a progress change, but no sooner than `PROGRESS_EVERY_S` after the request arrived, so a
  client that re-asks with `wait` sees progress about once a second, not at the worker's write
  rate (every 0.2 s), and stays far below the per-tenant request rate limit;
- after S seconds (capped by `LANTERN_MAX_WAIT_S`), or when the job disappears (expired).

Polling the hash, not RQ pubsub: the hash is what every view reads anyway, the loop needs no
connection of its own per waiter, and 5 reads a second per waiter is cheap for Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import NamedTuple

from rq.job import Job
from starlette.concurrency import run_in_threadpool

from schemas.keys import cancel_key
from service.sweeps import snapshot as sweep_snapshot

INTERVAL_S = 0.15  # server-side check interval while a request waits
PROGRESS_EVERY_S = 1.0  # a progress change ends a wait only after this long
TERMINAL = {b"finished", b"failed", b"stopped", b"canceled"}


class Snapshot(NamedTuple):
    status: bytes | None  # RQ's status field; None: the job is gone
    canceled: bool  # a queued job canceled (job meta)
    cancel_requested: bool  # a running job asked to stop (its cancel flag)
    progress: float


def snapshot(redis, job_id: str) -> Snapshot:
    """The parts of a job a waiter watches, in one pipeline round trip."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(Job.key_for(job_id), "status", "meta")
        pipe.exists(cancel_key(job_id))
        (status, raw_meta), flag = pipe.execute()
    try:
        meta = json.loads(raw_meta) if raw_meta else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    if "sweep" in meta and status not in TERMINAL and not meta.get("canceled"):
        # a sweep's parent is never run: its status and progress are its children's (service/sweeps.py)
        status, progress = sweep_snapshot(redis, job_id, raw_meta) or (status, 0.0)
        return Snapshot(status, False, False, progress)
    return Snapshot(status, bool(meta.get("canceled")), bool(flag), float(meta.get("progress") or 0.0))


def ended(s: Snapshot) -> bool:
    return s.status is None or s.status in TERMINAL or s.canceled


async def wait_for_change(redis, job_id: str, wait_s: float) -> Snapshot:
    """Return once the job differs from how it was when called (see the module docstring), or after
    `wait_s` seconds."""
    start = time.monotonic()
    first = await run_in_threadpool(snapshot, redis, job_id)
    now = first
    while not ended(now):
        elapsed = time.monotonic() - start
        if elapsed >= wait_s:
            break
        await asyncio.sleep(min(INTERVAL_S, wait_s - elapsed))
        now = await run_in_threadpool(snapshot, redis, job_id)
        if (now.status, now.canceled, now.cancel_requested) != (first.status, first.canceled, first.cancel_requested):
            break
        if now.progress != first.progress and time.monotonic() - start >= PROGRESS_EVERY_S:
            break
    return now


async def wait_until_ended(redis, job_id: str, wait_s: float) -> Snapshot:
    """Hold until the job has ended (finished, failed, canceled, gone) or `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    now = await run_in_threadpool(snapshot, redis, job_id)
    while not ended(now) and (left := deadline - time.monotonic()) > 0:
        now = await wait_for_change(redis, job_id, left)
    return now
