"""RFC 9457 problem+json responses and the exception that carries one."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from schemas.common import FieldError, Problem
from schemas.problems import PROBLEM_BASE  # the one definition, shared with the workers; also imported from here

MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str | None = None,
                 errors: list[FieldError] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail or title)
        self.problem = Problem(type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, errors=errors)
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(mode="json", exclude_none=True), status_code=problem.status,
                        media_type=MEDIA_TYPE, headers=headers)


def invalid(errors: list[FieldError], detail: str | None = None) -> ProblemError:
    detail = detail or "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors)
    return ProblemError(422, "invalid-request", "The request is invalid", detail, errors)


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "not-found", "Not found", f"no {what} with that id")
