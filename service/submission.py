"""The submit path every route that creates a job takes (`POST /v1/jobs`, KServe's `:explain`):
the checks the API can make before any model runs, then admission and the enqueue.

Cheap checks first (registry, setting limits), then the prompt's tokens and the model's facts (the
tokenizer and the facts are cached: service/tokens.py, service/heartbeats.py), artifacts and the
webhook. Then one MULTI round trip stages the enqueue (service/queue.py), admits it (Idempotency-Key,
`max_active_jobs`, queue depth: service/guards.py; a refusal takes the staged job back before any
worker can see it) and records it in the owner's index.

`submit_async` is the path of `POST /v1/jobs`: on the event loop, with no thread-pool hop, when the
checks are CPU only (the tokenizer and the facts cached, no webhook URL to resolve, no artifact to
read) and the job is not a sweep; otherwise it runs `submit` on the thread pool.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from common.webhook_urls import UnsafeURL, check_url, parse_networks
from schemas.common import FieldError, TextInput
from schemas.jobs import KINDS, JobBase, JobView
from service import sweeps
from service.checks import artifact_errors, artifact_refs, model_errors
from service.guards import Admission, Claim
from service.problems import ProblemError, invalid
from service.queue import Staged


@dataclass
class Submitted:
    view: JobView
    headers: dict[str, str] = field(default_factory=dict)  # Location, Retry-After, Idempotent-Replayed


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


def check(state, body: JobBase, owner: str) -> None:
    """Every submit-time check; raises a 422 problem listing what fails."""
    registry, limits, tokens, queue = state.registry, state.limits, state.tokens, state.queue
    spec = registry.get(body.model)
    if spec is None:
        raise invalid([FieldError(loc=["body", "model"], msg=f"unknown model; known: {sorted(registry)}",
                                  type="unknown_model", ctx={"known": sorted(registry)})])
    if spec.task not in KINDS[body.kind].tasks:  # type: ignore[attr-defined]
        raise invalid([FieldError(loc=["body", "kind"], msg=f"{body.kind} does not run on {spec.task} model "  # type: ignore[attr-defined]
                                  f"{body.model}", type="unsupported_kind")])
    errors = [e.model_copy(update={"loc": ["body", *e.loc]}) for e in body.over_limits(limits)]
    errors += sweeps.checkpoint_errors(body, spec)  # `checkpoint(s)` the registry lists (service/sweeps.py)
    if errors:  # the cheap checks first: a request they refuse costs no tokenizer time
        raise invalid(errors)
    if isinstance(body.input, TextInput):  # type: ignore[attr-defined]
        errors += tokens.check(body.model, body.input, limits, ["body", "input"])  # type: ignore[attr-defined]
    errors += model_errors(body, queue, tokens, limits)  # facts, positions, folds, result size (service/checks.py)
    errors += artifact_errors(body, queue, owner)
    errors += _webhook_errors(body, owner, state.settings, state.webhook_secrets)
    if errors:
        raise invalid(errors)


def _checks_need_io(state, body: JobBase) -> bool:
    """Whether `check` would read Redis or resolve a host name for `body` (see the module docstring)."""
    if body.webhook is not None or artifact_refs(body):
        return True
    if not state.queue.heartbeats.cached(body.model):
        return True
    return isinstance(body.input, TextInput) and not state.tokens.cached(body.model)  # type: ignore[attr-defined]


def submit(state, body: JobBase, owner: str, idempotency_key: str | None) -> Submitted:
    """Check, admit and enqueue `body` for `owner` (`state`: the app's, service/main.py). An
    Idempotency-Key seen before with the same body answers the earlier job."""
    check(state, body, owner)
    return enqueue(state, body, owner, idempotency_key)


async def submit_async(state, body: JobBase, owner: str, idempotency_key: str | None) -> Submitted:
    """`submit` on the event loop when nothing in it blocks; else on the thread pool."""
    if body.checkpoints is not None or _checks_need_io(state, body):
        return await run_in_threadpool(submit, state, body, owner, idempotency_key)
    check(state, body, owner)
    async with state.aio.client().pipeline(transaction=True) as pipe:
        staged = _stage(state, pipe, body, owner, idempotency_key)
        results = await pipe.execute()
    done = _answer(state, *staged, results)
    return done if isinstance(done, Submitted) else await run_in_threadpool(_replayed, state, done, owner)


def enqueue(state, body: JobBase, owner: str, idempotency_key: str | None) -> Submitted:
    """Admit and enqueue a job `check` has passed."""
    if body.checkpoints is not None:  # a sweep: a parent and a child per checkpoint (service/sweeps.py)
        return _enqueue_sweep(state, body, owner, idempotency_key)
    with state.queue.redis.pipeline(transaction=True) as pipe:
        staged = _stage(state, pipe, body, owner, idempotency_key)
        done = _answer(state, *staged, pipe.execute())
    return done if isinstance(done, Submitted) else _replayed(state, done, owner)


def _stage(state, pipe, body: JobBase, owner: str, idempotency_key: str | None) -> tuple[Staged, Admission]:
    """Queue the whole submit on `pipe` (sync or asyncio), one MULTI: enqueue, admission, record."""
    queue = state.queue
    pipe.multi()  # before any command: RQ's enqueue joins this transaction
    staged = queue.stage(pipe, body, owner, uuid.uuid4().hex)
    admission = state.guards.stage_admission(pipe, owner, idempotency_key, staged.payload,
                                             queue=(body.model, queue.queue_key(body.model)),
                                             job_id=staged.job.id, staged=staged.keys)
    queue.record(pipe, staged)
    return staged, admission


def _answer(state, staged: Staged, admission: Admission, results: list) -> Submitted | Claim:
    """The submit's answer from its MULTI's `results`; a Claim: replay the earlier job (`_replayed`)."""
    claim = state.guards.claim_of(admission, results)  # a refusal raises its problem
    if claim.replay:
        return claim
    view, retry_after = state.queue.enqueued(staged, results)
    body = staged.request
    state.metrics.submitted.labels(body.kind, body.model).inc()  # type: ignore[attr-defined]
    return Submitted(view, {"Location": view.links.self, "Retry-After": str(retry_after)})


def _replayed(state, claim: Claim, owner: str) -> Submitted:
    view = state.queue.view(claim.job_id, owner)
    if view is None:
        raise ProblemError(409, "idempotency-in-progress", "A request with this Idempotency-Key is in progress",
                           "retry shortly", headers={"Retry-After": "1"})
    return Submitted(view, {"Location": view.links.self, "Idempotent-Replayed": "true"})


def _enqueue_sweep(state, body: JobBase, owner: str, idempotency_key: str | None) -> Submitted:
    queue, guards = state.queue, state.guards
    claim = guards.admit(owner, idempotency_key, body.model_dump(mode="json"),
                         queue=(body.model, queue.queue_key(body.model)))
    if claim.replay:
        return _replayed(state, claim, owner)
    try:
        view, retry_after = sweeps.enqueue(queue, body, owner, claim.job_id, state.registry[body.model], state.limits)
    except BaseException:
        guards.give_back(owner, claim)
        raise
    state.metrics.submitted.labels(body.kind, body.model).inc()  # type: ignore[attr-defined]
    return Submitted(view, {"Location": view.links.self, "Retry-After": str(retry_after)})
