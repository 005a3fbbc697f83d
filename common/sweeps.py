"""Sweeps: one job run across a model's training checkpoints, as a parent job and one child job per
checkpoint (docs/checkpoints.md, "Sweeps"). Torch-free: the API reads and finalizes sweeps
(service/sweeps.py), and the webhook worker finalizes those nobody reads (delivery/webhook_worker.py).

The design, and why:

- **Children are ordinary jobs.** Child `<parent>_s<step>` is the request with `checkpoint: step`
  (no `checkpoints`, no webhook), enqueued on the model's own queue with `workers.tasks.run_job`,
  so every worker of the model takes them, in step order, and everything that covers a job covers
  a child: the reaper requeues one whose worker died, the cancel flag stops a running one.
- **The parent occupies nothing.** It is an RQ job hash that is never enqueued (status `deferred`)
  whose meta lists the steps (`meta["sweep"]`). No process waits on the children: the parent's status
  and progress are derived from the children's whenever the parent is read, and the first reader to
  see every child ended *finalizes* it: builds the `SweepResult` once, stores it under
  `sweep_result_key` (SET NX: one winner among API replicas and webhook workers), marks the parent
  hash ended, gives the tenant's slot back, and sends the parent's webhook. The webhook worker's
  housekeeping finalizes sweeps nobody polls (`finalize_open`), so a webhook arrives without a poll.
  RQ's own dependencies (`depends_on=Dependency(jobs=children, allow_failure=True)`) would need an RQ
  worker process on a light queue to run the collector, and they are not released by the paths that
  end a job outside a worker (our reaper's `worker-lost`, a canceled queued child, a child expired
  unstarted): the collector would wait forever. Deriving the parent from its children has no such
  path to miss.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis import Redis
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.results import Result as RQResult
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from common.changepoint import analyse
from common.webhook_queue import notify
from schemas.common import Problem, ResultWarning
from schemas.jobs import KINDS
from schemas.keys import SWEEPS_OPEN, active_jobs_key, sweep_result_key
from schemas.problems import PROBLEM_BASE
from schemas.sweeps import ChangePoint, Jump, ScalarSeries, SweepPoint, SweepResult

log = logging.getLogger("lantern.sweeps")

ENDED = {"finished", "failed", "canceled"}
_STATE = {  # RQ status -> a child's state
    RQStatus.CREATED: "queued", RQStatus.QUEUED: "queued", RQStatus.DEFERRED: "queued", RQStatus.SCHEDULED: "queued",
    RQStatus.STARTED: "started", RQStatus.FINISHED: "finished", RQStatus.FAILED: "failed",
    RQStatus.STOPPED: "canceled", RQStatus.CANCELED: "canceled",
}
_RAW_STATE = {s.value.encode(): state for s, state in _STATE.items()}


def child_id(parent_id: str, step: int) -> str:
    return f"{parent_id}_s{step}"


def is_sweep(job: Job) -> bool:
    return isinstance(job.meta.get("sweep"), dict)


@dataclass
class Child:
    step: int
    job_id: str
    state: str  # queued, started, finished, failed, canceled
    job: Job | None  # None: the job hash is gone (dropped unstarted, or expired)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def read_children(connection: Redis, parent_id: str, sweep: dict) -> list[Child]:
    """The children in step order, one pipeline round trip."""
    steps = sweep["steps"]
    ids = [child_id(parent_id, s) for s in steps]
    jobs = Job.fetch_many(ids, connection=connection, serializer=JSONSerializer)
    out = []
    for step, cid, job in zip(steps, ids, jobs):
        if job is None:
            state = "failed"  # dropped unstarted (queued_ttl) or expired: it will never run
        else:
            state = _STATE.get(job.get_status(refresh=False), "queued")
            if job.meta.get("canceled"):
                state = "canceled"
        out.append(Child(step, cid, state, job))
    return out


def raw_states(connection: Redis, parent_id: str, sweep: dict) -> list[str]:
    """The children's states from their status fields only (long polling's cheap read)."""
    with connection.pipeline(transaction=False) as pipe:
        for s in sweep["steps"]:
            pipe.hmget(Job.key_for(child_id(parent_id, s)), "status", "meta")
        rows = pipe.execute()
    states = []
    for status, meta in rows:
        if status is None:
            states.append("failed")
            continue
        state = _RAW_STATE.get(status, "queued")
        if state in ("queued", "started") and meta and _canceled(meta):
            state = "canceled"
        states.append(state)
    return states


def _canceled(raw_meta: bytes) -> bool:
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        return False
    return isinstance(meta, dict) and bool(meta.get("canceled"))


def aggregate(states: list[str]) -> tuple[str, float]:
    """(queued | started | ended, progress = ended children / all) of a sweep not yet finalized."""
    done = sum(s in ENDED for s in states)
    if done == len(states):
        return "ended", 1.0
    return ("started" if any(s != "queued" for s in states) else "queued"), done / len(states)


def child_problem(child: Child) -> Problem:
    job = child.job
    if job is None:
        return Problem(type=PROBLEM_BASE + "job-expired", title="The job was dropped before it ran", status=504,
                       detail=f"checkpoint {child.step}: no worker started it within queued_ttl_s, or it expired")
    if raw := job.meta.get("error"):
        return Problem.model_validate(raw)
    if child.state == "canceled":
        return Problem(type=PROBLEM_BASE + "canceled", title="The job was canceled", status=409)
    latest = job.latest_result()
    last = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
    return Problem(type=PROBLEM_BASE + "job-failed", title="The job failed", status=500,
                   detail=last[0][:500] if last else "the job failed without a recorded reason")


def scalars_of(kind: str, result: dict[str, Any]) -> dict[str, float]:
    """The kind's scalars (`Result.scalars()`) of one child's result."""
    try:
        values = KINDS[kind].result.model_validate(result).scalars()
    except (KeyError, ValidationError):
        log.warning("a %s result does not validate against its schema; no scalars taken", kind)
        return {}
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def build_result(kind: str, model: str, children: list[Child], max_result_bytes: int) -> SweepResult:
    """The sweep's result from its ended children (`children` in step order)."""
    points: list[SweepPoint] = []
    results: list[dict | None] = []
    for c in children:
        result = c.job.return_value() if c.state == "finished" and c.job is not None else None
        if c.state == "finished" and result is None:  # its result expired: report it as lost
            points.append(SweepPoint(step=c.step, job_id=c.job_id, status="failed", error=Problem(
                type=PROBLEM_BASE + "job-expired", title="The job was dropped before it ran", status=504,
                detail=f"checkpoint {c.step}: its result expired before the sweep was read")))
            results.append(None)
            continue
        if c.state == "finished":
            points.append(SweepPoint(step=c.step, job_id=c.job_id, status="finished", scalars=scalars_of(kind, result)))
        else:
            points.append(SweepPoint(step=c.step, job_id=c.job_id,
                                     status="canceled" if c.state == "canceled" else "failed", error=child_problem(c)))
        results.append(result)
    warnings: list[ResultWarning] = []
    size = sum(len(json.dumps(r, allow_nan=False)) for r in results if r is not None)
    included = size <= max_result_bytes
    if included:
        for p, r in zip(points, results):
            p.result = r
    else:
        warnings.append(ResultWarning(type="sweep-results-omitted", detail=(
            f"the checkpoints' results total {size} bytes, over max_result_bytes={max_result_bytes}: the series "
            "carries their scalars; read each whole result from its child job"),
            ctx={"bytes": size, "max_result_bytes": max_result_bytes}))
    failed = [p for p in points if p.status != "finished"]
    if failed:
        warnings.append(ResultWarning(type="sweep-checkpoints-failed", detail=(
            f"{len(failed)} of {len(points)} checkpoints did not finish (their `error` says why); the scalars "
            "and change points are over the others"), ctx={"steps": [p.step for p in failed]}))
    scalars = _scalar_series(points, warnings)
    return SweepResult(kind=kind, model=model, steps=[c.step for c in children],
                       finished=sum(p.status == "finished" for p in points),
                       failed=sum(p.status == "failed" for p in points),
                       canceled=sum(p.status == "canceled" for p in points),
                       series=points, scalars=scalars, results_included=included, warnings=warnings)


def _scalar_series(points: list[SweepPoint], warnings: list[ResultWarning]) -> dict[str, ScalarSeries]:
    names: list[str] = []
    for p in points:
        names += [n for n in p.scalars if n not in names]
    out = {}
    for name in names:
        pairs = [(p.step, p.scalars[name]) for p in points if name in p.scalars]
        steps, values = [s for s, _ in pairs], [v for _, v in pairs]
        a = analyse(steps, values)
        jump = a.largest_jump and Jump(from_step=a.largest_jump.from_step, to_step=a.largest_jump.to_step,
                                       delta=a.largest_jump.delta)
        cp = a.change_point and ChangePoint(**vars(a.change_point))
        out[name] = ScalarSeries(steps=steps, values=values, largest_jump=jump, change_point=cp)
        if cp is not None and cp.sparse:
            why = []
            if cp.interval_share >= 0.6:
                why.append(f"{cp.interval_share:.0%} of the change happens in that one interval")
            if cp.interval_log_fraction > 0.15:
                why.append(f"the interval spans {cp.interval_log_fraction:.0%} of the sweep's log-step range")
            warnings.append(ResultWarning(type="sweep-sparse-checkpoints", detail=(
                f"`{name}` changes between steps {cp.previous_step} and {cp.step} ({'; '.join(why)}): the "
                f"checkpoints cannot tell how abrupt the change is; add checkpoints inside, e.g. {cp.suggested_steps}"),
                ctx={"scalar": name, "previous_step": cp.previous_step, "step": cp.step,
                     "interval_share": cp.interval_share, "interval_log_fraction": cp.interval_log_fraction,
                     "suggested_steps": cp.suggested_steps}))
    return out


def canceled_problem(children: list[Child]) -> Problem:
    done = sum(c.state == "finished" for c in children)
    return Problem(type=PROBLEM_BASE + "canceled", title="The job was canceled", status=409,
                   detail=f"the sweep was canceled after {done} of {len(children)} checkpoints finished; "
                          "each finished one's result stays readable at its child job")


def finalize(connection: Redis, parent: Job, children: list[Child] | None = None) -> str | None:
    """End the sweep `parent` if every child has ended (or the sweep was canceled): store its result
    once, mark the parent hash ended, give its slot back, send its webhook. Returns the outcome
    (finished, failed, canceled), or None while children still run."""
    sweep = parent.meta["sweep"]
    children = children if children is not None else read_children(connection, parent.id, sweep)
    canceled = bool(parent.meta.get("canceled"))
    if not canceled and not all(c.ended for c in children):
        return None
    result = None
    if canceled:
        outcome, error = "canceled", canceled_problem(children)
    else:
        result = build_result(parent.meta.get("kind", "?"), parent.meta.get("model", "?"), children,
                              int(sweep.get("max_result_bytes", 16 * 1024 * 1024)))
        if result.finished:
            outcome, error = "finished", None
        else:
            first = next(p for p in result.series if p.error is not None)
            outcome, error = "failed", Problem(
                type=PROBLEM_BASE + "sweep-failed", title="Every checkpoint of the sweep failed", status=500,
                detail=f"checkpoint {first.step}: {first.error.title}"
                       + (f": {first.error.detail}" if first.error.detail else ""))
    ttl = int(sweep.get("result_ttl" if outcome == "finished" else "failure_ttl", 24 * 3600))
    data = result.model_dump(mode="json") if result is not None else None
    problem = error.model_dump(mode="json", exclude_none=True) if error is not None else None
    record = json.dumps({"outcome": outcome, "result": data, "error": problem}, allow_nan=False)
    if not connection.set(sweep_result_key(parent.id), record, nx=True, ex=ttl):
        return outcome  # someone else finalized it (the same children give the same record)
    status = {"finished": RQStatus.FINISHED, "failed": RQStatus.FAILED, "canceled": RQStatus.CANCELED}[outcome]
    now = datetime.now(UTC)
    started = [c.job.started_at for c in children if c.job is not None and c.job.started_at is not None]
    times = {"status": status.value, "ended_at": utcformat(now)}
    if started:  # the parent "started" with its first child
        times["started_at"] = utcformat(min(started))
    with connection.pipeline() as pipe:
        pipe.hset(parent.key, mapping=times)
        pipe.expire(parent.key, ttl)
        pipe.zrem(SWEEPS_OPEN, parent.id)
        pipe.zrem(active_jobs_key(parent.meta.get("owner", "anonymous")), parent.id)
        for c in children:  # they were kept while the sweep could run; now they live as long as its result
            if c.ended:
                pipe.expire(Job.key_for(c.job_id), ttl)
                pipe.expire(RQResult.get_key(c.job_id), ttl)
        pipe.execute()
    notify(connection, parent, outcome, result=data, error=problem)
    return outcome


def stored(connection: Redis, parent_id: str) -> dict | None:
    """A finalized sweep's record: {outcome, result, error}, or None."""
    raw = connection.get(sweep_result_key(parent_id))
    return json.loads(raw) if raw is not None else None


def finalize_open(connection: Redis, limit: int = 200) -> list[tuple[str, str]]:
    """Finalize the open sweeps whose children have all ended (the webhook worker's housekeeping);
    forget those whose parent is gone. Returns [(parent id, outcome)]."""
    done = []
    for raw in connection.zrange(SWEEPS_OPEN, 0, limit - 1):
        parent_id = raw.decode()
        parent = Job.fetch_many([parent_id], connection=connection, serializer=JSONSerializer)[0]
        if parent is None or not is_sweep(parent) or connection.exists(sweep_result_key(parent_id)):
            connection.zrem(SWEEPS_OPEN, parent_id)
            continue
        if aggregate(raw_states(connection, parent_id, parent.meta["sweep"]))[0] != "ended":
            continue
        outcome = finalize(connection, parent)
        if outcome is not None:
            done.append((parent_id, outcome))
    return done
