"""Body-size guard: a request body over `max_body_bytes` is a 413 problem before it is parsed."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.common import Problem
from service.problems import PROBLEM_BASE, problem_response


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _reject(self) -> object:
        return problem_response(Problem(
            type=PROBLEM_BASE + "body-too-large", title="The request body is too large", status=413,
            detail=f"the body is over max_body_bytes={self.max_bytes}"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject()(scope, receive, send)
            return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send)
        except BodyTooLarge:
            await self._reject()(scope, receive, send)
