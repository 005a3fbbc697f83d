"""Python client of the Lantern API (`from lantern.client import Client`): httpx, pydantic, no torch.

    from lantern.client import Client
    lc = Client("http://127.0.0.1:8000", api_key=None)           # or LANTERN_URL / LANTERN_API_KEY
    job = lc.submit("attribution", "smollm2-135m", {"prompt": "...", "target": " Mary"})
    job.wait(timeout=300, on_progress=lambda j: print(j.status, j.progress))
    job.result            # an AttributionResult (schemas.kinds.attribution), rendered in notebooks

`Job.wait` long-polls `GET /v1/jobs/{id}?wait=S` (the server answers as soon as the job changes)
and honours `Retry-After` on 429/503 and when a server answers without holding the request.
Errors are `LanternError`s carrying the RFC 9457 problem (status, type, title, detail, errors).
`AsyncClient` is the same on `httpx.AsyncClient`. `verify_webhook` checks a Standard Webhooks
signature as the service sends it (common/webhook_signature.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import httpx
from pydantic import BaseModel

from common.webhook_signature import WebhookVerificationError, verify_webhook  # noqa: F401  (public API)
from schemas.jobs import KINDS
from schemas.sweeps import SweepResult

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("finished", "failed", "canceled")
MAX_WAIT_S = 30.0  # asked per long poll; the server caps it with its own max_wait_s


class LanternError(Exception):
    """An error answer of the API: the problem+json it carried, and `Retry-After` when given."""

    def __init__(self, problem: dict[str, Any], retry_after: float | None = None):
        self.problem = problem
        self.status: int = int(problem.get("status") or 0)
        self.type: str = problem.get("type") or "about:blank"
        self.title: str = problem.get("title") or ""
        self.detail: str | None = problem.get("detail")
        self.errors: list[dict[str, Any]] = problem.get("errors") or []
        self.retry_after = retry_after
        super().__init__(f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else ""))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _poll_args(wait: float, read_timeout: float | None) -> dict[str, Any]:
    """Query and timeout of `GET /v1/jobs/{id}`: `wait` > 0 long-polls, and the read may take that much longer."""
    return {"params": {"wait": f"{wait:.3f}"} if wait > 0 else None,
            "timeout": read_timeout + wait + 5 if read_timeout is not None else None}


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code < 400:
        return response
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"title": response.reason_phrase or "error", "detail": response.text[:500]}
    problem.setdefault("status", response.status_code)
    raise LanternError(problem, _retry_after(response))


# -- results that render in notebooks ------------------------------------------------------------
_TYPED: dict[str, type[BaseModel]] = {}


def result_type(kind: str) -> type[BaseModel]:
    """The kind's result model (schemas.jobs.KINDS[kind].result), with `_repr_html_` for notebooks."""
    if kind not in _TYPED:
        base = KINDS[kind].result

        def _repr_html_(self, _kind=kind) -> str | None:
            from service import render_html

            return render_html.render(_kind, self.model_dump(mode="json"))

        _TYPED[kind] = type(base.__name__, (base,), {"_repr_html_": _repr_html_, "__module__": base.__module__})
    return _TYPED[kind]


class _JobBase:
    """What both job handles share: the last view seen and its typed parts."""

    def __init__(self, view: dict[str, Any]):
        self.view = view

    id = property(lambda self: self.view["id"])
    kind = property(lambda self: self.view["kind"])
    model = property(lambda self: self.view["model"])
    status = property(lambda self: self.view["status"])
    progress = property(lambda self: self.view.get("progress"))
    queue_position = property(lambda self: self.view.get("queue_position"))
    done = property(lambda self: self.view["status"] in TERMINAL)

    @property
    def error(self) -> LanternError | None:
        err = self.view.get("error")
        return LanternError(err) if err else None

    @property
    def result(self) -> BaseModel | None:
        """The typed result once finished (None before); a failed or canceled job raises its problem."""
        if self.view["status"] in ("failed", "canceled") and self.view.get("error"):
            raise LanternError(self.view["error"])
        raw = self.view.get("result")
        if raw is not None and raw.get("sweep") is True:  # a job submitted with `checkpoints`
            return SweepResult.model_validate(raw)
        return None if raw is None else result_type(self.kind).model_validate(raw)

    def _update(self, view: dict[str, Any]) -> bool:
        changed = (view["status"], view.get("progress"), view.get("queue_position"), view.get("cancel_requested")) != (
            self.view["status"], self.view.get("progress"), self.view.get("queue_position"),
            self.view.get("cancel_requested"))
        self.view = view
        return changed

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.status} progress={self.progress}>"

    def _waiting(self, timeout: float | None) -> Generator[tuple[str, float], Any, None]:
        """The wait loop of `Job.wait` and `AsyncJob.wait`, without I/O: it yields ("get", seconds to
        long-poll) and is sent back (view, Retry-After) or the `LanternError`; it yields ("sleep",
        seconds) and ("progress", 0) when the view changed; it ends when the job does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            remaining = MAX_WAIT_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {self.id} is still {self.status} after {timeout} s")
            ask = min(MAX_WAIT_S, remaining)
            started = time.monotonic()
            got = yield "get", ask
            if isinstance(got, LanternError):
                if got.status in (429, 503) and got.retry_after is not None:
                    yield "sleep", min(got.retry_after, max(remaining, 0))
                    continue
                raise got
            view, retry = got
            changed = self._update(view)
            if changed:
                yield "progress", 0.0
            held = time.monotonic() - started
            if not changed and not self.done and retry and held < ask / 2:  # a server that did not hold it
                yield "sleep", min(retry, max(remaining - held, 0))


def _next(plan: Generator[tuple[str, float], Any, None], reply: Any) -> tuple[str, float] | None:
    """The plan's next step after `reply` (None: the wait is over; the plan's errors propagate)."""
    try:
        return plan.send(reply)
    except StopIteration:
        return None



class Job(_JobBase):
    def __init__(self, client: Client, view: dict[str, Any]):
        super().__init__(view)
        self.client = client

    def refresh(self, wait: float = 0) -> Job:
        """Fetch the view again; `wait` > 0 long-polls (the server answers as soon as the job changes)."""
        self._update(self.client._get_view(self.id, wait)[0])
        return self

    def wait(self, timeout: float | None = None, on_progress: Callable[[Job], Any] | None = None) -> Job:
        """Until the job ends (finished, failed or canceled); `TimeoutError` after `timeout` seconds.
        `on_progress(job)` is called whenever status, progress or queue position change."""
        plan, reply = self._waiting(timeout), None
        while (step := _next(plan, reply)) is not None:
            action, arg = step
            reply = None
            if action == "get":
                try:
                    reply = self.client._get_view(self.id, arg)
                except LanternError as e:
                    reply = e
            elif action == "sleep":
                time.sleep(arg)
            elif on_progress is not None:
                on_progress(self)
        return self

    def cancel(self) -> Job:
        self._update(self.client._call("DELETE", f"/v1/jobs/{self.id}").json())
        return self


class Client:
    """Synchronous client. `base_url` default: `LANTERN_URL`, else http://127.0.0.1:8000; `api_key`
    default: `LANTERN_API_KEY` (sent as `Authorization: Bearer`)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = (base_url or os.environ.get("LANTERN_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LANTERN_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        return _check(self.http.request(method, path, **kw))

    def _get_view(self, job_id: str, wait: float) -> tuple[dict[str, Any], float | None]:
        r = self._call("GET", f"/v1/jobs/{job_id}", **_poll_args(wait, self.http.timeout.read))
        return r.json(), _retry_after(r)

    def submit(self, kind: str, model: str, input: dict[str, Any], params: dict[str, Any] | None = None,
               webhook: dict[str, Any] | None = None, idempotency_key: str | None = None,
               checkpoint: int | None = None, checkpoints: list[int] | str | None = None) -> Job:
        body = _body(kind, model, input, params, webhook, checkpoint, checkpoints)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job(self, self._call("POST", "/v1/jobs", json=body, headers=headers).json())

    def job(self, job_id: str) -> Job:
        return Job(self, self._get_view(job_id, 0)[0])

    get = job

    def cancel(self, job_id: str) -> Job:
        return Job(self, self._call("DELETE", f"/v1/jobs/{job_id}").json())

    def jobs(self, limit: int = 20, offset: int = 0) -> list[Job]:
        page = self._call("GET", "/v1/jobs", params={"limit": limit, "offset": offset}).json()
        return [Job(self, v) for v in page["jobs"]]

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/models").json()["models"]

    # -- artifacts: steering profiles (steering_fit) and edit sets (knowledge_edit) --------------
    def artifacts(self, kind: str, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """`kind`: "steering-profiles", "edits" or "anchors"."""
        return self._call("GET", f"/v1/{kind}", params={"limit": limit, "offset": offset}).json()["items"]

    def artifact(self, kind: str, artifact_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/{kind}/{artifact_id}").json()

    def delete_artifact(self, kind: str, artifact_id: str) -> None:
        self._call("DELETE", f"/v1/{kind}/{artifact_id}")

    def steering_profiles(self) -> list[dict[str, Any]]:
        return self.artifacts("steering-profiles")

    def edits(self) -> list[dict[str, Any]]:
        return self.artifacts("edits")


def _body(kind, model, input, params, webhook, checkpoint=None, checkpoints=None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "model": model, "input": input}
    if params:
        body["params"] = params
    if webhook:
        body["webhook"] = webhook
    if checkpoint is not None:  # one training step of the model (docs/checkpoints.md)
        body["checkpoint"] = checkpoint
    if checkpoints is not None:  # a sweep: [steps] or "all"; the result is a SweepResult
        body["checkpoints"] = checkpoints
    return body


# -- asyncio -------------------------------------------------------------------------------------
class AsyncJob(_JobBase):
    def __init__(self, client: AsyncClient, view: dict[str, Any]):
        super().__init__(view)
        self.client = client

    async def refresh(self, wait: float = 0) -> AsyncJob:
        self._update((await self.client._get_view(self.id, wait))[0])
        return self

    async def wait(self, timeout: float | None = None,
                   on_progress: Callable[[AsyncJob], Any | Awaitable[Any]] | None = None) -> AsyncJob:
        """As `Job.wait`; `on_progress` may be a coroutine function."""
        plan, reply = self._waiting(timeout), None
        while (step := _next(plan, reply)) is not None:
            action, arg = step
            reply = None
            if action == "get":
                try:
                    reply = await self.client._get_view(self.id, arg)
                except LanternError as e:
                    reply = e
            elif action == "sleep":
                await asyncio.sleep(arg)
            elif on_progress is not None and asyncio.iscoroutine(out := on_progress(self)):
                await out
        return self

    async def cancel(self) -> AsyncJob:
        self._update((await self.client._call("DELETE", f"/v1/jobs/{self.id}")).json())
        return self


class AsyncClient:
    """`Client` on asyncio: the same methods, awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = (base_url or os.environ.get("LANTERN_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LANTERN_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, **kw) -> httpx.Response:
        return _check(await self.http.request(method, path, **kw))

    async def _get_view(self, job_id: str, wait: float) -> tuple[dict[str, Any], float | None]:
        r = await self._call("GET", f"/v1/jobs/{job_id}", **_poll_args(wait, self.http.timeout.read))
        return r.json(), _retry_after(r)

    async def submit(self, kind: str, model: str, input: dict[str, Any], params: dict[str, Any] | None = None,
                     webhook: dict[str, Any] | None = None, idempotency_key: str | None = None,
                     checkpoint: int | None = None, checkpoints: list[int] | str | None = None) -> AsyncJob:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = _body(kind, model, input, params, webhook, checkpoint, checkpoints)
        r = await self._call("POST", "/v1/jobs", json=body, headers=headers)
        return AsyncJob(self, r.json())

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, (await self._get_view(job_id, 0))[0])

    get = job

    async def cancel(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, (await self._call("DELETE", f"/v1/jobs/{job_id}")).json())

    async def jobs(self, limit: int = 20, offset: int = 0) -> list[AsyncJob]:
        page = (await self._call("GET", "/v1/jobs", params={"limit": limit, "offset": offset})).json()
        return [AsyncJob(self, v) for v in page["jobs"]]

    async def models(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/models")).json()["models"]

    async def artifacts(self, kind: str, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        return (await self._call("GET", f"/v1/{kind}", params={"limit": limit, "offset": offset})).json()["items"]

    async def artifact(self, kind: str, artifact_id: str) -> dict[str, Any]:
        return (await self._call("GET", f"/v1/{kind}/{artifact_id}")).json()

    async def delete_artifact(self, kind: str, artifact_id: str) -> None:
        await self._call("DELETE", f"/v1/{kind}/{artifact_id}")
