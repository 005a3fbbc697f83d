"""API keys -> tenants, and the middleware that checks `Authorization: Bearer <key>`.

Keys come from `LANTERN_API_KEYS` (`tenant=key` pairs, comma separated; convenient for dev and CI)
or `LANTERN_API_KEYS_FILE` (one `tenant=<sha256 hex of the key>` per line, `#` comments; keys
never stored in clear). Both may be set; they merge. Only key digests are kept in memory: a
presented key is hashed and looked up, so there is no per-character comparison to time.

With no keys configured the API runs open (every caller is the tenant `anonymous`): it logs a
warning at start-up, `/readyz` says `"auth": "open"`, and `lantern api` binds to loopback by
default. `/healthz`, `/readyz` and `/metrics` never need a key, nor the documentation that holds no
tenant data: the problem type pages (`/problems/...`), Swagger UI's assets (`/static/...`) and the explorer page
(`/ui`, `/ui/static/...`), whose own calls to the API carry the key typed into it.

Wrong keys are rate limited per client address (`LANTERN_AUTH_FAILURES_PER_MIN`, see
service/guards.py): beyond the allowance the address gets 429 with `Retry-After`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from common.tenants import parse_secrets, tenant_pairs  # noqa: F401  (parse_secrets: for service/main.py)
from schemas.common import Problem
from service.problems import PROBLEM_BASE, problem_response

log = logging.getLogger("lantern.api")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/problems", "/ui"})
PUBLIC_PREFIXES = ("/problems/", "/static/", "/ui/")  # service/docs.py, service/ui (the explorer asks for a key itself)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Tenants:
    """Key digest -> tenant. Empty: open mode."""

    def __init__(self, by_digest: dict[str, str] | None = None):
        self.by_digest = dict(by_digest or {})

    @classmethod
    def from_settings(cls, api_keys: str | None, api_keys_file: str | None) -> Tenants:
        by_digest: dict[str, str] = {}
        for tenant, key in tenant_pairs(api_keys or "", ","):
            by_digest[digest(key)] = tenant
        if api_keys_file:
            for tenant, hexdigest in tenant_pairs(Path(api_keys_file).read_text(), "\n"):
                if not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
                    raise ValueError(f"{api_keys_file}: tenant {tenant!r}: the value must be a SHA-256 hex digest")
                by_digest[hexdigest.lower()] = tenant
        return cls(by_digest)

    @property
    def open(self) -> bool:
        return not self.by_digest

    def tenant_for(self, key: str) -> str | None:
        return self.by_digest.get(digest(key))


def _unauthorized(detail: str) -> object:
    return problem_response(
        Problem(type=PROBLEM_BASE + "unauthorized", title="A valid API key is required", status=401, detail=detail),
        {"WWW-Authenticate": 'Bearer realm="lantern"'})


def _too_many_failures(retry_after: int) -> object:
    return problem_response(
        Problem(type=PROBLEM_BASE + "too-many-failed-authentications", title="Too many failed authentications",
                status=429, detail="too many wrong API keys from this address (auth_failures_per_min); "
                                   "retry after the window ends"),
        {"Retry-After": str(retry_after)})


class FailureLimiter(Protocol):
    async def authentication_async(self, address: str, failed: bool) -> int: ...


class ApiKeyAuth:
    """Sets `scope["state"]["tenant"]` from the bearer key, or answers 401 problem+json.

    With `failures` (service/guards.py), wrong keys are counted per client address and an address
    over its allowance gets 429 for any key until its window ends, so keys cannot be guessed at
    line rate. The Redis round trip is awaited on the event loop (an asyncio client: no thread-pool
    hop, no blocking); with Redis away the limit is skipped (fail open: the key check itself needs
    no Redis)."""

    def __init__(self, app: ASGIApp, tenants: Tenants, failures: FailureLimiter | None = None):
        self.app = app
        self.tenants = tenants
        self.failures = failures

    async def _wait_s(self, scope: Scope, failed: bool) -> int:
        if self.failures is None:
            return 0
        client = scope.get("client")
        address = client[0] if client else "unknown"
        try:
            return await self.failures.authentication_async(address, failed)
        except RedisError:
            log.warning("failed-authentication limit skipped: Redis unavailable")
            return 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.tenants.open or scope["path"] in PUBLIC_PATHS
                or scope["path"].startswith(PUBLIC_PREFIXES)):
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            await _unauthorized("send Authorization: Bearer <api key>")(scope, receive, send)
            return
        tenant = self.tenants.tenant_for(key.strip())
        if wait := await self._wait_s(scope, failed=tenant is None):
            await _too_many_failures(wait)(scope, receive, send)
            return
        if tenant is None:
            await _unauthorized("the API key is not valid")(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)
