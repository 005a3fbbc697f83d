"""Every RFC 9457 problem type Lantern answers or ends a job with, in one place (API and workers).

A problem's `type` is the relative URI `/problems/<slug>` (RFC 9457 allows a relative reference; it
resolves against the API that answered, or, in a webhook or a stored job, against the API the job
was submitted to). The API serves a short page for each slug at `GET /problems/<slug>` (what it
means, what to do), so every `type` a client sees can be followed. No torch: the API imports this.

Adding a problem: add its slug here with a title, a status and advice; tests/unit/test_problems.py
finds every slug the code can emit and fails if one has no entry.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBLEM_BASE = "/problems/"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    advice: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


def problem_uri(slug: str) -> str:
    return PROBLEM_BASE + slug


PROBLEM_TYPES: dict[str, ProblemType] = {p.slug: p for p in (
    # -- answered by the API ----------------------------------------------------------------------
    ProblemType("malformed-json", 400, "The body is not valid JSON",
                "Send one JSON object; `detail` says where parsing stopped."),
    ProblemType("invalid-request", 422, "The request is invalid",
                "`errors` names each failing field (`loc`) and the rule or limit it broke (`ctx`); fix those "
                "fields. Limits are the server's settings, shown in the OpenAPI document."),
    ProblemType("body-too-large", 413, "The request body is too large",
                "Send a smaller body (LANTERN_MAX_BODY_BYTES); large inputs belong in fewer, shorter prompts."),
    ProblemType("unauthorized", 401, "A valid API key is required",
                "Send `Authorization: Bearer <api key>`; ask the operator for a key."),
    ProblemType("too-many-failed-authentications", 429, "Too many failed authentications",
                "Too many wrong API keys came from your address (LANTERN_AUTH_FAILURES_PER_MIN); wait for "
                "`Retry-After` seconds and send a valid key."),
    ProblemType("rate-limited", 429, "Too many requests",
                "Wait for `Retry-After` seconds, then retry; spread requests over time."),
    ProblemType("too-many-active-jobs", 429, "Too many jobs in progress",
                "Wait for some of your queued or running jobs to end (or cancel some), then submit again; "
                "`Retry-After` suggests when."),
    ProblemType("bad-idempotency-key", 400, "The Idempotency-Key is invalid",
                "Use 1 to 255 printable characters, unique per intended job."),
    ProblemType("idempotency-key-reused", 422, "The Idempotency-Key was used with another body",
                "A key binds one request body; use a new key for a different request."),
    ProblemType("idempotency-in-progress", 409, "A request with this Idempotency-Key is in progress",
                "Retry after `Retry-After`: the first request with this key is still being accepted."),
    ProblemType("not-found", 404, "Not found",
                "Check the id; jobs expire after their result or failure TTL, and other tenants' resources "
                "are never visible."),
    ProblemType("not-cancelable", 409, "The job has already ended",
                "Nothing to do: read the job's result or error with GET /v1/jobs/{id}."),
    ProblemType("queue-full", 503, "The queue is full",
                "The model's queue is at its depth limit; retry after `Retry-After` seconds."),
    ProblemType("unavailable", 503, "The job store is unavailable",
                "Redis is not reachable; retry after `Retry-After` seconds. Operators: check Redis."),
    ProblemType("not-ready", 503, "Not ready",
                "The API cannot reach Redis yet; a load balancer should route elsewhere until /readyz is 200."),
    ProblemType("internal", 500, "Internal error",
                "A bug on the server: retry once, and report it with the time of the request if it repeats."),
    # -- a failed or canceled job's `error` -------------------------------------------------------
    ProblemType("job-failed", 500, "The job failed",
                "`detail` says why; fix the input if it names one, else retry or report it."),
    ProblemType("invalid-input", 422, "The input cannot be processed",
                "The request was valid JSON but cannot run on this model (seen only when it ran); `errors` "
                "names the field. Fix it and submit again."),
    ProblemType("canceled", 409, "The job was canceled",
                "The job was canceled at your request; submit again to run it."),
    ProblemType("deadline-exceeded", 504, "The job ran past its time limit",
                "Ask for less work: fewer steps, samples, layers or tokens, or a shorter prompt."),
    ProblemType("result-too-large", 413, "The result is over the size limit",
                "Ask for less output (fewer layers, heads or positions) or raise LANTERN_MAX_RESULT_BYTES."),
    ProblemType("non-finite-result", 422, "The result is not finite",
                "The parameters pushed the arithmetic out of range (NaN or infinity); `detail` names the "
                "parameter. Use a value nearer its default."),
    ProblemType("method-error", 500, "The method raised an error",
                "An unexpected error in the method (`detail` has it): retry once, and report it if it repeats."),
    ProblemType("worker-lost", 503, "The worker running the job was lost",
                "The worker died while running the job and the retries are spent; submit the job again."),
    ProblemType("sweep-failed", 500, "Every checkpoint of the sweep failed",
                "The result's series would be empty: `detail` has the first checkpoint's error, and each child "
                "job (`<id>_s<step>`) has its own. Fix what it names and submit the sweep again."),
    ProblemType("job-expired", 504, "The job was dropped before it ran",
                "No worker started it within LANTERN_QUEUED_TTL_S (no live worker for its model, or a long "
                "queue): start a worker for the model and submit again."),
)}
