"""POST/GET/DELETE /v1/jobs: submit, poll, list and cancel explanation jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from schemas.examples import openapi_examples
from schemas.jobs import JobPage, JobRequest, JobStatus, JobView
from service import submission
from service.deps import GuardsDep, Owner, QueueDep, SettingsDep
from service.longpoll import wait_for_change
from service.problems import ProblemError, not_found
from service.responses import StrictJSONResponse

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PROBLEM = {"content": {"application/problem+json": {}}}
ERRORS = {s: PROBLEM for s in (400, 401, 404, 409, 413, 422, 429, 503)}


def _poll_headers(queue, view: JobView) -> dict[str, str]:
    if view.status in (JobStatus.queued, JobStatus.started):
        return {"Retry-After": str(queue.retry_after(view))}
    return {}


@router.post("", status_code=202, response_model=JobView, responses=ERRORS)
async def submit(body: Annotated[JobRequest, Body(openapi_examples=openapi_examples())],  # type: ignore[valid-type]
                 owner: Owner, request: Request,
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> JobView:
    """Submit a job. `Idempotency-Key` (per tenant, kept `idempotency_ttl_s`): the same key and body
    answer the same job; the same key with another body is 422."""
    # async: on the event loop when the checks need no I/O (service/submission.py); a sync route
    # would cost a thread-pool hop, and FastAPI a second one to validate its answer
    submitted = await submission.submit_async(request.app.state, body, owner, idempotency_key)
    # the view as FastAPI would write it, without validating again the model we just built
    return StrictJSONResponse(submitted.view.model_dump(mode="json", by_alias=True), status_code=202,
                              headers=submitted.headers)


@router.get("", response_model=JobPage)
def list_jobs(queue: QueueDep, owner: Owner, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> JobPage:
    """The caller's recent jobs, newest first, without results (fetch a job for its result)."""
    jobs, more = queue.list(owner, limit, offset)
    return JobPage(jobs=jobs, next=f"/v1/jobs?limit={limit}&offset={offset + limit}" if more else None)


def _poll(queue, job_id: str, owner: str) -> StrictJSONResponse:
    view = queue.view(job_id, owner)
    if view is None:  # absent, another owner's, or expired while a long poll waited
        raise not_found("job")
    return StrictJSONResponse(view.model_dump(mode="json", by_alias=True), headers=_poll_headers(queue, view))


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
async def get_job(job_id: str, queue: QueueDep, owner: Owner, settings: SettingsDep,
                  wait: Annotated[float, Query(ge=0, le=3600, description=(
                      "long polling: hold the request up to this many seconds (capped by max_wait_s) and "
                      "answer as soon as the job's status changes or a cancel is asked; a progress change "
                      "answers too, but no sooner than 1 s after the request (service/longpoll.py)"))] = 0
                  ) -> JobView:
    """The job's status, progress and, once finished, its result. One thread-pool hop reads it (two
    with `wait`); the view is written as is, not validated again on the way out."""
    if wait > 0:
        if await run_in_threadpool(queue.fetch, job_id, owner) is None:
            raise not_found("job")
        await wait_for_change(queue.redis, job_id, min(wait, settings.max_wait_s))
    return await run_in_threadpool(_poll, queue, job_id, owner)  # type: ignore[return-value]


@router.delete("/{job_id}", status_code=202, response_model=JobView, responses=ERRORS)
def cancel_job(job_id: str, queue: QueueDep, owner: Owner, guards: GuardsDep) -> JobView:
    """Cancel a queued job at once, or ask a running one to stop at its next batch."""
    job = queue.fetch(job_id, owner)
    if job is None:
        raise not_found("job")
    view = queue.view_of(job, with_result=False)
    if view.status not in (JobStatus.queued, JobStatus.started):
        raise ProblemError(409, "not-cancelable", "The job has already ended", f"the job is {view.status.value}")
    view = queue.cancel(job)
    if view.status is JobStatus.canceled:  # ended here (a running job gives its slot back on the worker)
        guards.release_slot(owner, job_id)
    return view
