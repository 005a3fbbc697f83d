"""The API's side of checkpoints and sweeps (docs/checkpoints.md): the submit-time checks of
`checkpoint` / `checkpoints` against the model's registry entry, the fan-out of a sweep into a
parent job and one child job per checkpoint, the parent's view, and its cancel. The parent is
derived from its children when read and finalized by the first reader that sees them all ended
(common/sweeps.py says why: no process waits on the children).

service/queue.py hands a sweep's parent to `view` and `cancel` (`common.sweeps.is_sweep`), and
service/submission.py calls `checkpoint_errors` and `enqueue`.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rq import Queue
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from common import sweeps
from schemas.common import FieldError, Problem
from schemas.jobs import KINDS, JobBase, JobLinks, JobStatus, JobView, JobWarning
from schemas.keys import SWEEPS_OPEN, jobs_index_key, queue_name, run_seconds_key, webhook_secret_key
from schemas.limits import Limits
from schemas.models import ModelSpec

if TYPE_CHECKING:
    from service.queue import JobQueue

TASK = "workers.tasks.run_job"


# -- submit-time checks ------------------------------------------------------------------------
def known_steps(spec: ModelSpec) -> list[int]:
    return [c.step for c in spec.checkpoints or ()]


def checkpoint_errors(body: JobBase, spec: ModelSpec) -> list[FieldError]:
    """`checkpoint` / `checkpoints` must name steps the model's registry entry lists (422 otherwise,
    naming the field and the known steps)."""
    if body.checkpoint is None and body.checkpoints is None:
        return []
    known = known_steps(spec)
    field = "checkpoint" if body.checkpoint is not None else "checkpoints"
    if not known:
        return [FieldError(loc=["body", field], msg=f"model {spec.id} has no training checkpoints in the registry",
                           type="no_checkpoints", ctx={"model": spec.id})]
    if body.checkpoint is not None:
        if body.checkpoint in known:
            return []
        return [FieldError(loc=["body", "checkpoint"], msg=f"model {spec.id} has no checkpoint at step "
                           f"{body.checkpoint}; known steps: {known}", type="unknown_checkpoint",
                           ctx={"known": known})]
    if body.checkpoints == "all":
        return []
    return [FieldError(loc=["body", "checkpoints", i], msg=f"model {spec.id} has no checkpoint at step {s}; "
                       f"known steps: {known}", type="unknown_checkpoint", ctx={"known": known})
            for i, s in enumerate(body.checkpoints) if s not in known]  # type: ignore[union-attr]


def steps_of(body: JobBase, spec: ModelSpec) -> list[int]:
    """The sweep's steps in order (`"all"`: every checkpoint of the model)."""
    return known_steps(spec) if body.checkpoints == "all" else sorted(body.checkpoints or ())  # type: ignore[arg-type]


# -- fan-out -----------------------------------------------------------------------------------
def enqueue(queue: JobQueue, request: JobBase, owner: str, job_id: str, spec: ModelSpec,
            limits: Limits | None = None) -> tuple[JobView, int]:
    """The parent job (never enqueued) and one child per checkpoint on the model's queue, with the
    owner's index entry, in one MULTI round trip; returns the parent's view and its Retry-After."""
    settings = queue.settings
    steps = steps_of(request, spec)
    payload = request.model_dump(mode="json")
    timeout = KINDS[request.kind].timeout_s
    # The parent lives until every child could have waited and run on one worker, then its result's TTL.
    lifetime = settings.queued_ttl_s + len(steps) * timeout + max(settings.result_ttl_s, settings.failure_ttl_s)
    sweep = {"steps": steps, "result_ttl": settings.result_ttl_s, "failure_ttl": settings.failure_ttl_s,
             "max_result_bytes": (limits or Limits()).max_result_bytes}
    meta = {"owner": owner, "kind": request.kind, "model": request.model}
    rq_queue = Queue(queue_name(request.model), connection=queue.redis, serializer=JSONSerializer)
    index = jobs_index_key(owner)
    with queue.redis.pipeline() as pipe:
        pipe.multi()
        if payload.get("webhook") and payload["webhook"].get("secret"):  # never in a payload (service/queue.py)
            pipe.set(webhook_secret_key(job_id), payload["webhook"].pop("secret"), ex=lifetime)
        parent = Job.create(TASK, args=(payload,), id=job_id, connection=queue.redis, serializer=JSONSerializer,
                            status=RQStatus.DEFERRED, description=f"sweep of {request.kind} on {request.model} "
                            f"over {len(steps)} checkpoints", meta={**meta, "sweep": sweep}, timeout=timeout)
        parent.save(pipeline=pipe)
        pipe.expire(parent.key, lifetime)
        for step in steps:
            child = {**payload, "checkpoints": None, "checkpoint": step, "webhook": None}
            rq_queue.enqueue_call(
                TASK, args=(child,), job_id=sweeps.child_id(job_id, step), timeout=timeout,
                # kept while the parent may still be finalized from it
                result_ttl=lifetime, failure_ttl=lifetime, ttl=settings.queued_ttl_s,
                description=f"{request.kind} on {request.model} at step {step} (sweep {job_id})",
                meta={**meta, "parent": job_id, "step": step}, pipeline=pipe)
        pipe.zadd(SWEEPS_OPEN, {job_id: time.time()})
        pipe.zadd(index, {job_id: time.time()})
        pipe.zremrangebyrank(index, 0, -settings.jobs_index_size - 1)
        pipe.expire(index, max(settings.result_ttl_s, settings.failure_ttl_s))
        pipe.llen(rq_queue.key)
        pipe.hget(run_seconds_key(request.model), request.kind)
        *_, length, avg = pipe.execute()
    answer = view(queue, parent, position=length - len(steps))
    workers = max(1, sum(request.model in w["model_ids"] for w in queue.live_workers()))
    estimate = (length * (float(avg) if avg is not None else 1.0)) / workers
    return answer, int(min(60, max(1, math.ceil(estimate))))


# -- read --------------------------------------------------------------------------------------
def view(queue: JobQueue, job: Job, with_result: bool = True, live: set[str] | None = None,
         position: int | None = None) -> JobView:
    """The parent's view: from its stored record once finalized, else from its children (and
    finalized here when they have all ended)."""
    redis = queue.redis
    record = sweeps.stored(redis, job.id)
    children = None
    if record is None:
        children = sweeps.read_children(redis, job.id, job.meta["sweep"])
        if all(c.ended for c in children) or job.meta.get("canceled"):
            sweeps.finalize(redis, job, children)
            record = sweeps.stored(redis, job.id)
    model, kind = job.meta.get("model", "?"), job.meta.get("kind", "?")
    common = {"id": job.id, "kind": kind, "model": model, "created_at": _utc(job.created_at),
              "links": JobLinks(self=f"/v1/jobs/{job.id}")}
    if record is not None:
        status = JobStatus(record["outcome"])
        if job.ended_at is None:  # finalized since this job object was read
            job.refresh()
        return JobView(**common, status=status, started_at=_utc(job.started_at), finished_at=_utc(job.ended_at),
                       progress=1.0 if status is JobStatus.finished else None,
                       cancel_requested=status is JobStatus.canceled,
                       result=record["result"] if with_result and status is JobStatus.finished else None,
                       error=Problem.model_validate(record["error"]) if record["error"] else None)
    assert children is not None
    state, progress = sweeps.aggregate([c.state for c in children])
    started = [c.job.started_at for c in children if c.job is not None and c.job.started_at is not None]
    warnings = []
    if state == "queued":
        if model not in (live if live is not None else queue.live_model_ids()):
            warnings.append(JobWarning(type="no-live-worker", detail=(
                f"no live worker holds {model}: the sweep's checkpoints wait in its queue until one starts, "
                f"and are dropped if none starts them within queued_ttl_s={queue.settings.queued_ttl_s}")))
        if position is None:
            position = children[0].job.get_position() if children[0].job is not None else None
    return JobView(**common, status=JobStatus.started if state == "started" else JobStatus.queued,
                   started_at=_utc(min(started)) if started else None, progress=progress if state == "started" else 0.0,
                   queue_position=position if state == "queued" else None, warnings=warnings)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def snapshot(redis, job_id: str, raw_meta: bytes | None) -> tuple[bytes, float] | None:
    """For long polling (service/longpoll.py): a sweep parent's (status, progress) as its children
    have it, or None when `raw_meta` is not a sweep's. All children ended reads as `finished`: the
    view that follows finalizes the parent and says how it ended."""
    try:
        meta = json.loads(raw_meta) if raw_meta else None
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("sweep"), dict):
        return None
    state, progress = sweeps.aggregate(sweeps.raw_states(redis, job_id, meta["sweep"]))
    return {"ended": b"finished", "started": b"started", "queued": b"queued"}[state], progress


# -- cancel ------------------------------------------------------------------------------------
def cancel(queue: JobQueue, job: Job) -> JobView:
    """Cancel every child still queued (at once) or running (at its next progress check), and end
    the parent `canceled` now."""
    job.meta["canceled"] = True
    job.save_meta()
    for child in sweeps.read_children(queue.redis, job.id, job.meta["sweep"]):
        if child.job is not None and not child.ended:
            queue.cancel(child.job)
    return view(queue, job)
