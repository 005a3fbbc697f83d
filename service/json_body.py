"""Every request body is JSON: read it as JSON whatever the Content-Type says.

`curl -d '{...}'` sends `application/x-www-form-urlencoded`; callers should not have to know
to add a header for an API that only ever takes JSON.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

JSON = b"application/json"


class JsonBodies:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            # in place: the router's match (`scope["route"]`) must stay visible to outer middleware
            scope["headers"] = [*headers, (b"content-type", JSON)]
        await self.app(scope, receive, send)
