"""The only module that knows RQ: submit, view, list and cancel jobs; queue depth; live workers.

Jobs are enqueued by dotted path (`workers.tasks.run_job`) with a JSON payload (RQ's
JSONSerializer; never pickle), one queue per model id. The owner (tenant) rides in job meta and
every read checks it, so another owner's job reads as absent.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from common.sweeps import is_sweep
from common.webhook_events import build_entry
from schemas.common import Problem
from schemas.jobs import KINDS, JobBase, JobLinks, JobStatus, JobView, JobWarning
from schemas.keys import (
    WEBHOOK_QUEUE,
    cancel_key,
    jobs_index_key,
    queue_name,
    run_seconds_key,
    webhook_secret_key,
)
from service import sweeps
from service.config import Settings
from service.heartbeats import Heartbeats
from service.problems import PROBLEM_BASE

TASK = "workers.tasks.run_job"
# Run in the enqueue's MULTI, after the job is pushed (and after its admission, which may have taken
# it back: then it does nothing): record it in the owner's index (bounded, expiring) and read what
# the answer needs. KEYS: the index, the model's queue, its run-time hash, the job's RQ hash. ARGV:
# job id, now, index size, index TTL, kind. Returns {queue length (the job is last), average run s
# or nil}, or nil when the job was taken back.
_RECORD = """
if redis.call('EXISTS', KEYS[4]) == 0 then return nil end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {redis.call('LLEN', KEYS[2]), redis.call('HGET', KEYS[3], ARGV[5])}
"""
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

_STATUS = {
    RQStatus.CREATED: JobStatus.queued, RQStatus.QUEUED: JobStatus.queued, RQStatus.DEFERRED: JobStatus.queued,
    RQStatus.SCHEDULED: JobStatus.queued, RQStatus.STARTED: JobStatus.started,
    RQStatus.FINISHED: JobStatus.finished, RQStatus.FAILED: JobStatus.failed,
    RQStatus.STOPPED: JobStatus.canceled, RQStatus.CANCELED: JobStatus.canceled,
}


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass
class Staged:
    """A job `JobQueue.stage` queued on a pipeline: the RQ job, the keys its enqueue writes (an
    admission refusal deletes them), the request and its JSON (the webhook secret included: what an
    Idempotency-Key's fingerprint covers)."""

    job: Job
    keys: list[str]
    request: JobBase
    owner: str
    payload: dict


class JobQueue:
    def __init__(self, connection: Redis, settings: Settings):
        self.redis = connection
        self.settings = settings
        self.heartbeats = Heartbeats(connection)
        self._queues: dict[str, Queue] = {}

    def _queue(self, model: str) -> Queue:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = Queue(queue_name(model), connection=self.redis, serializer=JSONSerializer)
        return queue

    def queue_key(self, model: str) -> str:
        """The Redis list of `model`'s queue (its depth is checked at admission, service/guards.py)."""
        return self._queue(model).key

    # -- submit ---------------------------------------------------------------------------------
    def depth(self, model: str) -> int:
        return self._queue(model).count

    def submit(self, request: JobBase, owner: str, job_id: str | None = None) -> JobView:
        return self.enqueue(request, owner, job_id)[0]

    def enqueue(self, request: JobBase, owner: str, job_id: str | None = None) -> tuple[JobView, int]:
        """Enqueue the job (no admission: service/submission.py admits) and record it in the owner's
        index in one MULTI round trip, which also reads what the answer needs: the view and its
        Retry-After."""
        with self.redis.pipeline() as pipe:
            pipe.multi()  # before any command: RQ's enqueue joins this transaction
            staged = self.stage(pipe, request, owner, job_id or uuid.uuid4().hex)
            self.record(pipe, staged)
            return self.enqueued(staged, pipe.execute())

    def stage(self, pipe, request: JobBase, owner: str, job_id: str) -> Staged:
        """Queue on `pipe` (a MULTI pipeline, sync or asyncio: RQ only queues commands on it) the
        enqueue of the job: its webhook secret, RQ's job hash and push; then, after whatever the
        caller queues next (its admission), `record`. `enqueued` reads the answer."""
        payload = request.model_dump(mode="json")
        settings = self.settings
        queue = self._queue(request.model)
        args, written = payload, []
        if payload.get("webhook") and payload["webhook"].get("secret"):
            # The secret stays out of the job's payload (queue readers, dashboards, logs see payloads);
            # the webhook worker reads it from its own key, which expires with the job.
            hook = dict(payload["webhook"])
            secret = hook.pop("secret")
            args = {**payload, "webhook": hook}
            written.append(webhook_secret_key(job_id))
            pipe.set(written[-1], secret, ex=max(settings.result_ttl_s, settings.failure_ttl_s) + settings.queued_ttl_s)
        job = queue.enqueue_call(
            TASK, args=(args,), job_id=job_id, timeout=KINDS[request.kind].timeout_s,  # type: ignore[attr-defined]
            result_ttl=settings.result_ttl_s, failure_ttl=settings.failure_ttl_s,
            ttl=settings.queued_ttl_s, description=f"{request.kind} on {request.model}",  # type: ignore[attr-defined]
            meta={"owner": owner, "kind": request.kind, "model": request.model},  # type: ignore[attr-defined]
            pipeline=pipe,
        )
        return Staged(job, [job.key, *written], request, owner, payload)

    def record(self, pipe, staged: Staged) -> None:
        """Queue the record of a staged job on `pipe` (see `_RECORD`): the last command of the MULTI,
        where `enqueued` reads its answer."""
        request, settings = staged.request, self.settings
        # EVAL, not EVALSHA: a pipeline would check SCRIPT EXISTS first (one more round trip)
        pipe.eval(_RECORD, 4, jobs_index_key(staged.owner), self._queue(request.model).key,
                  run_seconds_key(request.model), staged.job.key, staged.job.id, time.time(),
                  settings.jobs_index_size, max(settings.result_ttl_s, settings.failure_ttl_s),
                  request.kind)  # type: ignore[attr-defined]

    def enqueued(self, staged: Staged, results: list) -> tuple[JobView, int]:
        """The view of a staged job from its MULTI's `results`, and its Retry-After."""
        length, avg = results[-1]  # `record`'s answer; the job is the last: position = length - 1
        view = self.view_of(staged.job, position=length - 1)
        return view, self._retry_after(view, avg)

    # -- read -----------------------------------------------------------------------------------
    def fetch(self, job_id: str, owner: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):  # RQ raises on other characters: such an id names no job
            return None
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None
        return job if job.meta.get("owner") == owner else None

    def view_of(self, job: Job, with_result: bool = True, live: set[str] | None = None,
                position: int | None = None) -> JobView:
        """The job's view; `live`: the model ids live workers hold (looked up when needed and not given);
        `position`: a queued job's place in its queue, when known (else looked up)."""
        if is_sweep(job):  # a sweep's parent: derived from its children (service/sweeps.py)
            return sweeps.view(self, job, with_result, live, position)
        rq_status = job.get_status(refresh=False)
        status = _STATUS.get(rq_status, JobStatus.queued)
        if job.meta.get("canceled"):
            status = JobStatus.canceled
        result = error = None
        if status is JobStatus.finished and with_result:
            result = job.return_value()
        if status in (JobStatus.failed, JobStatus.canceled):
            error = self._error(job, status)
        progress = job.meta.get("progress") or 0.0
        if status is JobStatus.finished:
            progress = 1.0
        # a running job stops at its next cancel check (workers/progress.py); until then, say it is asked
        cancel_requested = status is JobStatus.canceled or (
            status is JobStatus.started and bool(self.redis.exists(cancel_key(job.id))))
        model = job.meta.get("model", "?")
        warnings = []
        if status is JobStatus.queued and not (model in live if live is not None else self.heartbeats.holding(model)):
            warnings.append(self._no_worker(model))
        if status is JobStatus.queued and position is None:
            position = job.get_position()
        return JobView(
            id=job.id, kind=job.meta.get("kind", "?"), model=model, status=status,
            created_at=_utc(job.created_at), started_at=_utc(job.started_at), finished_at=_utc(job.ended_at),
            progress=progress if status is not JobStatus.queued else 0.0,
            queue_position=position if status is JobStatus.queued else None,
            cancel_requested=cancel_requested,
            result=result, error=error, warnings=warnings, links=JobLinks(self=f"/v1/jobs/{job.id}"),
        )

    def _no_worker(self, model: str) -> JobWarning:
        return JobWarning(type="no-live-worker", detail=(
            f"no live worker holds {model} (none has sent a heartbeat within its TTL): the job waits in the "
            f"queue until one starts, and is dropped if none starts it within "
            f"queued_ttl_s={self.settings.queued_ttl_s}"))

    def _error(self, job: Job, status: JobStatus) -> Problem:
        if raw := job.meta.get("error"):
            return Problem.model_validate(raw)
        if status is JobStatus.canceled:
            return Problem(type=PROBLEM_BASE + "canceled", title="The job was canceled", status=409)
        latest = job.latest_result()
        last_line = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
        return Problem(type=PROBLEM_BASE + "job-failed", title="The job failed", status=500,
                       detail=last_line[0][:500] if last_line else "the job failed without a recorded reason")

    def view(self, job_id: str, owner: str) -> JobView | None:
        job = self.fetch(job_id, owner)
        return None if job is None else self.view_of(job)

    def list(self, owner: str, limit: int, offset: int) -> tuple[list[JobView], bool]:
        index = jobs_index_key(owner)
        ids = [i.decode() for i in self.redis.zrevrange(index, offset, offset + limit)]  # one extra: has_more
        jobs = Job.fetch_many(ids[:limit], connection=self.redis, serializer=JSONSerializer)
        gone = [i for i, j in zip(ids, jobs) if j is None]
        if gone:
            self.redis.zrem(index, *gone)
        live = self.live_model_ids()
        return [self.view_of(j, with_result=False, live=live) for j in jobs if j is not None], len(ids) > limit

    # -- cancel ---------------------------------------------------------------------------------
    def cancel(self, job: Job) -> JobView:
        """Queued: removed from its queue now. Started: the worker stops at its next progress call."""
        if is_sweep(job):  # every child, and the parent now (service/sweeps.py)
            return sweeps.cancel(self, job)
        status = job.get_status()
        if status in (RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED):
            job.meta["canceled"] = True
            job.save_meta()
            try:
                job.cancel()
            except InvalidJobOperation:
                pass
            # It never reaches a worker, so its `canceled` webhook is enqueued here.
            problem = self._error(job, JobStatus.canceled).model_dump(mode="json", exclude_none=True)
            entry = build_entry(job.id, job.meta.get("owner", "anonymous"), (job.args or [{}])[0], "canceled",
                                error=problem)
            if entry is not None:
                self.redis.rpush(WEBHOOK_QUEUE, json.dumps(entry))
        elif status is RQStatus.STARTED:
            self.redis.set(cancel_key(job.id), 1, ex=self.settings.result_ttl_s)
        job.refresh()
        return self.view_of(job)

    # -- estimates and workers ------------------------------------------------------------------
    def retry_after(self, view: JobView) -> int:
        """Seconds a poller should wait: queue position × average run time / live workers."""
        return self._retry_after(view, self.redis.hget(run_seconds_key(view.model), view.kind))

    def _retry_after(self, view: JobView, avg: bytes | None) -> int:
        avg_s = float(avg) if avg is not None else 1.0
        if view.status is JobStatus.queued:
            workers = max(1, len(self.heartbeats.holding(view.model)))
            estimate = (1 + (view.queue_position or 0)) * avg_s / workers
        else:
            estimate = avg_s * (1.0 - (view.progress or 0.0))
        return int(min(60, max(1, math.ceil(estimate))))

    def live_model_ids(self) -> set[str]:
        """Model ids some live worker holds (its heartbeat key has not expired)."""
        return {m for w in self.live_workers() for m in w["model_ids"]}

    def model_facts(self, model: str) -> dict | None:
        """The facts a live worker publishes for `model` (service/heartbeats.py: cached briefly)."""
        return self.heartbeats.facts(model)

    def live_workers(self) -> list[dict]:
        return self.heartbeats.read()
