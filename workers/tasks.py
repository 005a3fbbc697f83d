"""`run_job(payload) -> dict`: the single entry point the API enqueues (by dotted path, JSON payload).

Validates the payload back into its request model, checks the limits again (the worker is the
last line), runs the kind's method with a progress callable that enforces cancel and deadline,
stamps provenance, and returns the result as JSON-ready data. Any failure ends the job `failed`
with a Problem in `job.meta["error"]`; the worker itself never dies of a request.
"""

from __future__ import annotations

import json
import logging
import time

from pydantic import ValidationError
from rq import get_current_job

from common.artifacts import ArtifactStore
from common.slots import release_slot
from common.webhook_queue import notify
from schemas.common import FieldError, Problem
from schemas.facts import Facts
from schemas.jobs import KINDS, JobBase, parse_job
from schemas.keys import cancel_key, run_seconds_key
from schemas.limits import Limits
from workers import metrics
from workers.context import Context
from workers.errors import PROBLEM_BASE, BadInput, Canceled, JobFailed, ResultTooLarge
from workers.finite import check_finite
from workers.internals.hooks import hook_ids, remove_hooks_since
from workers.models.checkpoints import CheckpointCache
from workers.models.loading import LM
from workers.progress import JobProgress, cancel_points
from workers.registry import REGISTRY

log = logging.getLogger("lantern.worker")

MODELS: dict[str, LM] = {}  # filled once by workers.main at start-up
CHECKPOINTS = CheckpointCache()  # training checkpoints of those models, on demand (LANTERN_CHECKPOINT_CACHE_BYTES)


def run_job(payload: dict) -> dict:
    job = get_current_job()
    kind = str(payload.get("kind"))
    model_id = str(payload.get("model"))
    started = time.time()
    if job is not None and job.enqueued_at is not None:
        metrics.QUEUE_WAIT.labels(kind).observe(max(0.0, started - job.enqueued_at.timestamp()))
    metrics.BUSY.set(1)
    lm = MODELS.get(model_id)
    hooks_before = hook_ids(lm.model) if lm is not None else set()
    checkpoint_hooks = {id(m): hook_ids(m) for m in CHECKPOINTS.models()}  # the checkpoints held now
    outcome = "failed"
    out = None
    if job is not None:
        notify(job.connection, job, "started")
    try:
        out = _run(job, payload)
        outcome = "finished"
        return out
    except JobFailed as e:
        outcome = "canceled" if isinstance(e, Canceled) else "failed"
        _record_error(job, e.problem, canceled=isinstance(e, Canceled))
        raise
    except Exception as e:  # a bug or a resource error in a method: the job fails, the worker lives
        log.exception("job %s raised", job.id if job else "-")
        _record_error(job, Problem(type=PROBLEM_BASE + "method-error", title="The method raised an error",
                                   status=500, detail=f"{type(e).__name__}: {e}"[:2000]))
        raise
    finally:
        elapsed = time.time() - started
        metrics.BUSY.set(0)
        metrics.RUN_SECONDS.labels(kind).observe(elapsed)
        metrics.JOBS_FINISHED.labels(kind, model_id, outcome).inc()
        metrics.observe_cuda()
        if lm is not None and (left := remove_hooks_since(lm.model, hooks_before)):
            log.error("job left %d hooks on %s; removed", left, model_id)
            metrics.LEFTOVER_HOOKS.inc(left)
        for model in CHECKPOINTS.models():  # the same last line for a checkpoint (one loaded in this job: none before)
            if left := remove_hooks_since(model, checkpoint_hooks.get(id(model), set())):
                log.error("job left %d hooks on a checkpoint of %s; removed", left, model_id)
                metrics.LEFTOVER_HOOKS.inc(left)
        if job is not None and outcome == "finished":
            _update_runtime(job.connection, model_id, kind, elapsed)
        if job is not None:  # a Redis RPUSH only: delivery runs on the webhook worker
            notify(job.connection, job, outcome, result=out, error=job.meta.get("error"))
            release_slot(job)


def _run(job, payload: dict) -> dict:
    try:
        request: JobBase = parse_job(payload)
    except ValidationError as e:
        raise BadInput("the payload does not match the job schema",
                       [FieldError(loc=list(err["loc"]), msg=err["msg"], type=err["type"]) for err in e.errors()])
    lm = MODELS.get(request.model)
    if lm is None:
        raise BadInput(f"model {request.model!r} is not loaded on this worker")
    if request.checkpoint is not None:  # a training step: loaded on demand, kept in the LRU (the base stays)
        lm = CHECKPOINTS.get(lm, request.checkpoint)
    limits = Limits()
    if errors := request.over_limits(limits) + request.over_facts(Facts.of(lm.facts())):  # as at submit
        raise BadInput("; ".join(e.msg for e in errors), errors)
    timeout = (job.timeout if job is not None and job.timeout else None) or KINDS[request.kind].timeout_s
    connection = job.connection if job is not None else None
    progress = JobProgress(job, time.monotonic() + timeout,
                           is_canceled=lambda: bool(connection and connection.exists(cancel_key(job.id))))
    store = ArtifactStore(connection, job.meta.get("owner", "anonymous")) if job is not None else None
    ctx = Context(progress=progress, limits=limits, store=store)
    with cancel_points(lm.layers, progress):  # cancel/deadline checked per layer, forward and backward
        result = REGISTRY[request.kind].run(lm, request, ctx)
    result.provenance.elapsed_s = round(time.perf_counter() - ctx.started, 4)
    out = result.model_dump(mode="json")  # NaN/±inf stay NaN/±inf here (Result's ser_json_inf_nan)
    try:
        size = len(json.dumps(out, allow_nan=False))
    except ValueError:  # every kind, one place: fail with a problem that says where and why
        check_finite(out, request.kind, request.params)
        raise
    if size > limits.max_result_bytes:
        raise ResultTooLarge(f"the result is {size} bytes, over max_result_bytes={limits.max_result_bytes}; "
                             "select fewer layers, heads or positions")
    if job is not None:
        job.meta["progress"] = 1.0
        job.save_meta()
    return out


def _record_error(job, problem: Problem, canceled: bool = False) -> None:
    if job is None:
        return
    job.meta["error"] = problem.model_dump(mode="json", exclude_none=True)
    job.meta["canceled"] = canceled
    job.save_meta()


def _update_runtime(connection, model_id: str, kind: str, seconds: float) -> None:
    """Moving average of run seconds per kind, for the API's Retry-After estimate."""
    key = run_seconds_key(model_id)
    old = connection.hget(key, kind)
    avg = seconds if old is None else 0.8 * float(old) + 0.2 * seconds
    connection.hset(key, kind, round(avg, 4))
