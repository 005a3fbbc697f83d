"""POST/GET/DELETE /v1/jobs: submit, poll, list and cancel explanation jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from schemas.common import FieldError
from schemas.jobs import KINDS, JobPage, JobRequest, JobStatus, JobView
from service.deps import LimitsDep, MetricsDep, Owner, QueueDep, RegistryDep, SettingsDep, TokensDep
from service.problems import ProblemError, invalid, not_found

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PROBLEM = {"content": {"application/problem+json": {}}}
ERRORS = {s: PROBLEM for s in (400, 404, 409, 413, 422, 503)}


def _poll_headers(queue, view: JobView) -> dict[str, str]:
    if view.status in (JobStatus.queued, JobStatus.started):
        return {"Retry-After": str(queue.retry_after(view))}
    return {}


@router.post("", status_code=202, response_model=JobView, responses=ERRORS)
def submit(body: Annotated[JobRequest, Body()], response: Response, queue: QueueDep, owner: Owner,  # type: ignore[valid-type]
           registry: RegistryDep, limits: LimitsDep, tokens: TokensDep, settings: SettingsDep,
           metrics: MetricsDep) -> JobView:
    spec = registry.get(body.model)
    if spec is None:
        raise invalid([FieldError(loc=["body", "model"], msg=f"unknown model; known: {sorted(registry)}",
                                  type="unknown_model", ctx={"known": sorted(registry)})])
    if spec.task not in KINDS[body.kind].tasks:
        raise invalid([FieldError(loc=["body", "kind"], msg=f"{body.kind} does not run on {spec.task} model "
                                  f"{body.model}", type="unsupported_kind")])
    errors = [e.model_copy(update={"loc": ["body", *e.loc]}) for e in body.over_limits(limits)]
    if hasattr(body.input, "prompt"):
        errors += tokens.check(body.model, body.input, limits, ["body", "input"])
    if errors:
        raise invalid(errors)
    depth = queue.depth(body.model)
    if depth >= settings.max_queue_depth:
        raise ProblemError(503, "queue-full", "The queue is full",
                           f"{depth} jobs wait for {body.model}, at max_queue_depth={settings.max_queue_depth}",
                           headers={"Retry-After": "10"})
    view = queue.submit(body, owner)
    metrics.submitted.labels(body.kind, body.model).inc()
    response.headers["Location"] = view.links.self
    response.headers.update(_poll_headers(queue, view))
    return view


@router.get("", response_model=JobPage)
def list_jobs(queue: QueueDep, owner: Owner, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> JobPage:
    """The caller's recent jobs, newest first, without results (fetch a job for its result)."""
    jobs, more = queue.list(owner, limit, offset)
    return JobPage(jobs=jobs, next=f"/v1/jobs?limit={limit}&offset={offset + limit}" if more else None)


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
def get_job(job_id: str, response: Response, queue: QueueDep, owner: Owner) -> JobView:
    view = queue.view(job_id, owner)
    if view is None:
        raise not_found("job")
    response.headers.update(_poll_headers(queue, view))
    return view


@router.delete("/{job_id}", status_code=202, response_model=JobView, responses=ERRORS)
def cancel_job(job_id: str, queue: QueueDep, owner: Owner) -> JobView:
    """Cancel a queued job at once, or ask a running one to stop at its next batch."""
    job = queue.fetch(job_id, owner)
    if job is None:
        raise not_found("job")
    view = queue.view_of(job, with_result=False)
    if view.status not in (JobStatus.queued, JobStatus.started):
        raise ProblemError(409, "not-cancelable", "The job has already ended", f"the job is {view.status.value}")
    return queue.cancel(job)
