"""Jobs left `started` by a dead worker: retry once on another worker, or end `failed`.

A model worker keeps `lantern:worker:<name>` alive with a heartbeat (TTL `LANTERN_WORKER_HEARTBEAT_TTL_S`,
20 s). RQ's own clean-up only sees an abandoned job when the job's whole timeout has passed (a
non-forking worker never refreshes its registry entry), so a `kill -9` would leave the job
`started` for up to `timeout + 60 s`. `reap()` looks at every model queue's started registry: an
entry whose worker has no heartbeat is abandoned. It is requeued at the front while it has been
lost fewer than `LANTERN_WORKER_LOST_RETRIES` times (default 1; 0 = never retry), otherwise it
ends `failed` with a `worker-lost` problem, and the job's webhook (if any) is told.

A worker can also die in the instant between taking a job off its queue (RQ moves it into
`<queue>:intermediate`) and marking it started: the job is then `queued` in no list a worker reads,
and RQ's own maintenance (every 10 minutes) would fail it. `reap()` puts such a job back at the
front of its queue once it has sat there `LANTERN_DEQUEUE_GRACE_S` (10 s; a live worker starts a
job within milliseconds of taking it). It never ran, so this does not count as a lost run.

`reap()` is idempotent and safe to run from many processes at once (a per-execution lock); the
webhook worker runs it every `LANTERN_REAPER_INTERVAL_S` and so does each model worker.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.utils import parse_composite_key, utcformat

from common.settings import ProcessSettings
from common.slots import release_slot
from common.webhook_queue import notify
from schemas.common import Problem
from schemas.keys import queue_name, reap_claim_key, worker_key
from schemas.problems import PROBLEM_BASE

log = logging.getLogger("lantern.reaper")


def lost_retries() -> int:
    return ProcessSettings().worker_lost_retries


def worker_lost_problem(worker: str, times: int) -> Problem:
    return Problem(type=PROBLEM_BASE + "worker-lost", title="The worker running the job was lost", status=503,
                   detail=f"worker {worker!r} stopped (killed or crashed) while running this job; it was lost "
                          f"{times} time(s), over LANTERN_WORKER_LOST_RETRIES={lost_retries()}")


def dequeue_grace_s() -> float:
    return ProcessSettings().dequeue_grace_s


def reap(connection: Redis, model_ids: list[str], retries: int | None = None,
         grace_s: float | None = None) -> list[tuple[str, str]]:
    """Handle abandoned jobs; returns [(job_id, "requeued" | "failed")]."""
    retries = lost_retries() if retries is None else retries
    grace_s = dequeue_grace_s() if grace_s is None else grace_s
    done: list[tuple[str, str]] = []
    for model_id in model_ids:
        queue = Queue(queue_name(model_id), connection=connection, serializer=JSONSerializer)
        done += _rescue_dequeued(connection, queue, grace_s)
        registry = queue.started_job_registry
        for raw in connection.zrange(registry.key, 0, -1):
            composite = raw.decode()
            job_id, _execution = parse_composite_key(composite)
            try:
                job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            except NoSuchJobError:
                connection.zrem(registry.key, composite)
                continue
            worker = job.worker_name or ""
            if job.get_status(refresh=False) != JobStatus.STARTED or connection.exists(worker_key(worker)):
                continue
            if not connection.set(reap_claim_key(composite), 1, nx=True, ex=300):
                continue  # another reaper has it
            done.append((job_id, _handle(connection, queue, registry, composite, job, worker, retries)))
    return done


def _rescue_dequeued(connection: Redis, queue: Queue, grace_s: float) -> list[tuple[str, str]]:
    """Jobs taken off `queue` by a worker that died before starting them go back to its front.

    First sightings live in one hash per queue, keyed by job id and enqueue time (a job requeued
    later is a new sighting), pruned to what the intermediate list still holds."""
    key, seen_key = queue.intermediate_queue_key, reap_claim_key(f"dequeued:{queue.name}")
    done: list[tuple[str, str]] = []
    now = time.time()
    current: set[str] = set()
    for raw in connection.lrange(key, 0, -1):
        job_id = raw.decode()
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            connection.lrem(key, 1, job_id)
            continue
        if job.get_status(refresh=False) != JobStatus.QUEUED:
            connection.lrem(key, 1, job_id)  # started: a worker on several queues leaves the entry behind
            continue
        sighting = f"{job_id}@{job.enqueued_at.timestamp() if job.enqueued_at else 0}"
        current.add(sighting)
        connection.hsetnx(seen_key, sighting, now)
        if now - float(connection.hget(seen_key, sighting) or now) < grace_s:
            continue  # a live worker may be starting it right now
        if connection.lrem(key, 1, job_id):  # only one reaper wins the entry
            queue.enqueue_job(job, at_front=True)
            current.discard(sighting)
            log.warning("job %s: taken off the queue by a worker that died before starting it; requeued", job_id)
            done.append((job_id, "requeued"))
    stale = [f for f in connection.hkeys(seen_key) if f.decode() not in current]
    if stale:
        connection.hdel(seen_key, *stale)
    return done


def _handle(connection: Redis, queue: Queue, registry, composite: str, job: Job, worker: str, retries: int) -> str:
    lost = int(job.meta.get("worker_lost", 0)) + 1
    job.meta["worker_lost"] = lost
    if lost <= retries:
        job.meta["progress"] = 0.0
        job.save_meta()
        # RQ's public requeue (it cannot join our pipeline: it WATCHes a job's dependencies). Enqueued
        # first, then out of the started registry: a crash in between runs the job twice at worst
        # (the claim above keeps other reapers off it), never loses it.
        queue.enqueue_job(job, at_front=True)
        connection.zrem(registry.key, composite)
        log.warning("job %s: worker %s lost; requeued (%d/%d)", job.id, worker, lost, retries)
        return "requeued"
    problem = worker_lost_problem(worker, lost)
    job.meta["error"] = problem.model_dump(mode="json", exclude_none=True)
    job.save_meta()
    job.ended_at = datetime.now(timezone.utc)
    with connection.pipeline() as pipe:
        pipe.zrem(registry.key, composite)
        record_job_failure(job, f"worker {worker} lost (AbandonedJobError)", pipe)
        pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
        pipe.execute()
    log.warning("job %s: worker %s lost %d time(s); failed", job.id, worker, lost)
    notify(connection, job, "failed", error=job.meta["error"])
    release_slot(job)
    return "failed"


def start_thread(connection: Redis, model_ids: list[str], stop: threading.Event,
                 interval: float | None = None) -> threading.Thread:
    interval = interval or ProcessSettings().reaper_interval_s

    def loop() -> None:
        while not stop.wait(interval):
            try:
                reap(connection, model_ids)
            except Exception:  # Redis away: try again next round
                log.warning("reaper pass failed", exc_info=True)

    thread = threading.Thread(target=loop, name="lantern-reaper", daemon=True)
    thread.start()
    return thread
