"""KServe's v1 explainer protocol: `POST /v1/models/{name}:explain` with `{"instances": [...]}`.

KServe's router forwards an `:explain` call to the explainer container with the same body, so
Lantern can be the explainer of a predictor (deploy/kserve/). Each instance becomes an
`attribution` job for model `name` (schemas/kserve.py), submitted through the path of
`POST /v1/jobs` (service/submission.py: the same auth, tenant, limits, checks and problems; a
problem names the instance, `["body", "instances", i, ...]`). All instances are checked before any
is enqueued; one refused at admission cancels those already enqueued. The request is then held
until every job has ended, up to `wait` seconds (capped by `max_wait_s`): 200 with KServe's
`{"explanations": [...]}`, the failed job's problem if one failed, or 202 with the jobs to poll.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from schemas.common import MODEL_ID_PATTERN
from schemas.jobs import JobStatus, JobView
from schemas.kinds.attribution import AttributionInput, AttributionJob, AttributionParams
from schemas.kserve import ExplainPending, ExplainRequest, ExplainResponse
from service import submission
from service.deps import Owner
from service.longpoll import wait_until_ended
from service.problems import ProblemError, problem_response
from service.responses import StrictJSONResponse

router = APIRouter(tags=["kserve"])
PROBLEM = {"content": {"application/problem+json": {}}}


def _jobs(name: str, body: ExplainRequest) -> list[AttributionJob]:
    params = body.parameters or AttributionParams()
    return [AttributionJob(kind="attribution", model=name, params=params,
                           input=AttributionInput(prompt=i) if isinstance(i, str) else i) for i in body.instances]


def _where(e, i: int, plain: bool):
    """A submit problem's field located in the KServe body (`plain`: the instance is the prompt itself)."""
    head, *rest = e.loc[1:] if e.loc[:1] == ["body"] else e.loc
    loc = {"input": ["body", "instances", i], "params": ["body", "parameters"], "model": ["path", "name"]}.get(head)
    if head == "input" and plain and rest[:1] == ["prompt"]:
        rest = rest[1:]
    return e if loc is None else e.model_copy(update={"loc": [*loc, *rest]})


def _submit_all(state, body: ExplainRequest, jobs: list[AttributionJob], owner: str,
                key: str | None) -> list[JobView]:
    for i, job in enumerate(jobs):  # every instance checked before any is enqueued
        try:
            submission.check(state, job, owner)
        except ProblemError as e:
            if e.problem.errors:
                plain = isinstance(body.instances[i], str)
                e.problem.errors = [_where(err, i, plain) for err in e.problem.errors]
                e.problem.detail = "; ".join(f"{'.'.join(map(str, err.loc))}: {err.msg}" for err in e.problem.errors)
            raise
    views: list[JobView] = []
    try:
        for i, job in enumerate(jobs):
            views.append(submission.enqueue(state, job, owner, None if key is None else f"{key}#{i}").view)
    except BaseException:
        for view in views:  # all or none: give back what this request enqueued
            if (rq_job := state.queue.fetch(view.id, owner)) is not None and view.status is JobStatus.queued:
                if state.queue.cancel(rq_job).status is JobStatus.canceled:
                    state.guards.release_slot(owner, view.id)
        raise
    return views


@router.post("/v1/models/{name}:explain", response_model=ExplainResponse,
             responses={202: {"model": ExplainPending}, **{s: PROBLEM for s in (401, 404, 409, 413, 422, 429, 503)}})
async def explain(name: Annotated[str, Path(min_length=1, max_length=128, pattern=MODEL_ID_PATTERN)],
                  body: ExplainRequest, request: Request, owner: Owner,
                  wait: Annotated[float | None, Query(ge=0, le=3600, description=(
                      "seconds to hold the request for the explanations (default and cap: max_wait_s)"))] = None,
                  idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None):
    """Explain each instance with an attribution of `name` (KServe v1 protocol)."""
    state = request.app.state
    views = await run_in_threadpool(_submit_all, state, body, _jobs(name, body), owner, idempotency_key)
    wait_s = state.settings.max_wait_s if wait is None else min(wait, state.settings.max_wait_s)
    if wait_s > 0:
        await asyncio.gather(*(wait_until_ended(state.queue.redis, v.id, wait_s) for v in views))
    views = await run_in_threadpool(lambda: [state.queue.view(v.id, owner) or v for v in views])
    if failed := next((v for v in views if v.error is not None), None):
        return problem_response(failed.error)
    if all(v.status is JobStatus.finished for v in views):
        return ExplainResponse(explanations=[v.result for v in views])
    return StrictJSONResponse(ExplainPending(jobs=views).model_dump(mode="json"), status_code=202,
                              headers={"Location": views[0].links.self, "Retry-After": "1"})
