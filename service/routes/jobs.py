"""POST/GET/DELETE /v1/jobs: submit, poll, list and cancel explanation jobs."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from schemas.common import FieldError
from schemas.examples import openapi_examples
from schemas.jobs import KINDS, JobPage, JobRequest, JobStatus, JobView
from schemas.webhook_urls import UnsafeURL, check_url, parse_networks
from service.checks import artifact_errors, model_errors
from service.deps import GuardsDep, LimitsDep, MetricsDep, Owner, QueueDep, RegistryDep, SettingsDep, TokensDep
from service.longpoll import wait_for_change
from service.problems import ProblemError, invalid, not_found

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PROBLEM = {"content": {"application/problem+json": {}}}
ERRORS = {s: PROBLEM for s in (400, 401, 404, 409, 413, 422, 429, 503)}


def _valid_secret(secret: str) -> bool:
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        return False
    return secret.startswith("whsec_") and 24 <= len(raw) <= 64


def _webhook_errors(body, owner: str, settings, secrets: dict[str, str]) -> list[FieldError]:
    """The webhook URL must pass the SSRF guard now (a 422, not a silent failure later), and a
    secret must exist: the request's own or the tenant's configured one."""
    hook = body.webhook
    if hook is None:
        return []
    errors = []
    try:
        check_url(str(hook.url), parse_networks(settings.webhook_allowed_networks))
    except UnsafeURL as e:
        errors.append(FieldError(loc=["body", "webhook", "url"], msg=f"webhook URL refused: {e}", type="unsafe_url"))
    if hook.secret is not None and not _valid_secret(hook.secret):
        errors.append(FieldError(loc=["body", "webhook", "secret"], msg="a Standard Webhooks secret is `whsec_` "
                                 "followed by base64 of 24 to 64 random bytes", type="value_error"))
    if hook.secret is None and owner not in secrets:
        errors.append(FieldError(loc=["body", "webhook", "secret"], msg="no secret given and none is configured "
                                 "for this tenant (LANTERN_WEBHOOK_SECRETS)", type="missing"))
    return errors


def _poll_headers(queue, view: JobView) -> dict[str, str]:
    if view.status in (JobStatus.queued, JobStatus.started):
        return {"Retry-After": str(queue.retry_after(view))}
    return {}


@router.post("", status_code=202, response_model=JobView, responses=ERRORS)
def submit(body: Annotated[JobRequest, Body(openapi_examples=openapi_examples())], response: Response, queue: QueueDep, owner: Owner,  # type: ignore[valid-type]
           registry: RegistryDep, limits: LimitsDep, tokens: TokensDep, settings: SettingsDep,
           metrics: MetricsDep, guards: GuardsDep, request: Request,
           idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> JobView:
    """Submit a job. `Idempotency-Key` (per tenant, kept `idempotency_ttl_s`): the same key and body
    answer the same job; the same key with another body is 422."""
    spec = registry.get(body.model)
    if spec is None:
        raise invalid([FieldError(loc=["body", "model"], msg=f"unknown model; known: {sorted(registry)}",
                                  type="unknown_model", ctx={"known": sorted(registry)})])
    if spec.task not in KINDS[body.kind].tasks:
        raise invalid([FieldError(loc=["body", "kind"], msg=f"{body.kind} does not run on {spec.task} model "
                                  f"{body.model}", type="unsupported_kind")])
    errors = [e.model_copy(update={"loc": ["body", *e.loc]}) for e in body.over_limits(limits)]
    if errors:  # the cheap checks first: a request they refuse costs no tokenizer time
        raise invalid(errors)
    if hasattr(body.input, "prompt"):
        errors += tokens.check(body.model, body.input, limits, ["body", "input"])
    errors += model_errors(body, queue, tokens, limits)  # facts, positions, folds, result size (service/checks.py)
    errors += artifact_errors(body, queue, owner)
    errors += _webhook_errors(body, owner, settings, request.app.state.webhook_secrets)
    if errors:
        raise invalid(errors)
    claim = guards.claim(owner, idempotency_key, body.model_dump(mode="json"))
    if claim.replay:
        view = queue.view(claim.job_id, owner)
        if view is None:
            raise ProblemError(409, "idempotency-in-progress", "A request with this Idempotency-Key is in progress",
                               "retry shortly", headers={"Retry-After": "1"})
        response.headers["Location"] = view.links.self
        response.headers["Idempotent-Replayed"] = "true"
        return view
    try:
        view = _enqueue(body, owner, claim.job_id, queue, settings, guards)
    except BaseException:
        guards.release(claim)
        raise
    metrics.submitted.labels(body.kind, body.model).inc()
    response.headers["Location"] = view.links.self
    response.headers.update(_poll_headers(queue, view))
    return view


def _enqueue(body, owner: str, job_id: str, queue, settings, guards) -> JobView:
    guards.acquire_slot(owner, job_id)  # atomic check-and-record of max_active_jobs
    try:
        depth = queue.depth(body.model)
        if depth >= settings.max_queue_depth:
            raise ProblemError(503, "queue-full", "The queue is full",
                               f"{depth} jobs wait for {body.model}, at max_queue_depth={settings.max_queue_depth}",
                               headers={"Retry-After": "10"})
        return queue.submit(body, owner, job_id)
    except BaseException:
        guards.release_slot(owner, job_id)
        raise


@router.get("", response_model=JobPage)
def list_jobs(queue: QueueDep, owner: Owner, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> JobPage:
    """The caller's recent jobs, newest first, without results (fetch a job for its result)."""
    jobs, more = queue.list(owner, limit, offset)
    return JobPage(jobs=jobs, next=f"/v1/jobs?limit={limit}&offset={offset + limit}" if more else None)


@router.get("/{job_id}", response_model=JobView, responses=ERRORS)
async def get_job(job_id: str, response: Response, queue: QueueDep, owner: Owner, settings: SettingsDep,
                  wait: Annotated[float, Query(ge=0, le=3600, description=(
                      "long polling: hold the request up to this many seconds (capped by max_wait_s) and "
                      "answer as soon as the job's status changes or a cancel is asked; a progress change "
                      "answers too, but no sooner than 1 s after the request (service/longpoll.py)"))] = 0
                  ) -> JobView:
    if await run_in_threadpool(queue.fetch, job_id, owner) is None:
        raise not_found("job")
    if wait > 0:
        await wait_for_change(queue.redis, job_id, min(wait, settings.max_wait_s))
    view = await run_in_threadpool(queue.view, job_id, owner)
    if view is None:  # expired while we waited
        raise not_found("job")
    response.headers.update(await run_in_threadpool(_poll_headers, queue, view))
    return view


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
