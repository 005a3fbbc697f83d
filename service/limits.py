"""Body-size guard: a request body over `max_body_bytes` is a 413 problem before it is parsed,
with or without a `Content-Length`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.common import Problem
from service.problems import PROBLEM_BASE, problem_response


class BodySizeLimit:
    """413 problem+json for a body over `max_bytes`, decided before the app sees the request.

    A `Content-Length` over the limit is refused at once. Otherwise (a chunked body has no
    length) the body is read here, counting as it streams, and refused as soon as it passes the
    limit; a body within it is handed to the app whole. (Raising from inside the app's `receive`
    instead would reach FastAPI's body parsing, which turns any error there into a 400.)"""

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
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: nothing to answer
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: dict | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: disconnect notices, as usual

        await self.app(scope, replay, send)
