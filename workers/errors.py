"""Exceptions a method raises to end its job `failed` with a Problem the caller can act on."""

from __future__ import annotations

from schemas.common import FieldError, Problem
from schemas.problems import PROBLEM_BASE  # noqa: F401  (re-exported: the one definition is in schemas/)


class JobFailed(Exception):
    """Ends the job `failed` with `problem` in its `error`."""

    status = 500
    slug = "job-failed"
    title = "The job failed"

    def __init__(self, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors

    @property
    def problem(self) -> Problem:
        return Problem(type=PROBLEM_BASE + self.slug, title=self.title, status=self.status,
                       detail=self.detail, errors=self.errors)


class BadInput(JobFailed):
    """The request is valid JSON for its kind but cannot run on this model (seen only at run time)."""

    status = 422
    slug = "invalid-input"
    title = "The input cannot be processed"


class Canceled(JobFailed):
    status = 409
    slug = "canceled"
    title = "The job was canceled"


class DeadlineExceeded(JobFailed):
    status = 504
    slug = "deadline-exceeded"
    title = "The job ran past its time limit"


class NonFiniteResult(JobFailed):
    """The method's numbers came out NaN or ±inf (workers/finite.py): the parameters pushed the
    arithmetic out of range, so the job fails rather than finish with `null` where numbers belong."""

    status = 422
    slug = "non-finite-result"
    title = "The result is not finite"


class ResultTooLarge(JobFailed):
    status = 413
    slug = "result-too-large"
    title = "The result is over the size limit"
