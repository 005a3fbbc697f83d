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
service/guards.py): beyond the allowance the address gets 429 with `Retry-After`. The same round
trip counts the tenant's rate for a right key (`rate_limit_per_s`, `rate_limit_burst_per_min`), so
every request with a key is rate limited, whatever its route.
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
from service.guards import Gate
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


class Gatekeeper(Protocol):
    async def gate_async(self, address: str, tenant: str | None) -> Gate: ...


RATED = "lantern.rated"  # in the request state: the gate has counted this request's rate (service/deps.py)


class ApiKeyAuth:
    """Sets `scope["state"]["tenant"]` from the bearer key, or answers 401 problem+json.

    With `gate` (service/guards.py), one Redis round trip per request with a key counts wrong keys
    per client address (an address over its allowance gets 429 for any key until its window ends,
    so keys cannot be guessed at line rate) and, for a right key, the tenant's rate (429 past it). It
    is awaited on the event loop (an asyncio client: no thread-pool hop, no blocking); with Redis
    away it is skipped (fail open: the key check itself needs no Redis; the `owner` dependency then
    tries the rate again and a route that needs Redis answers 503)."""

    def __init__(self, app: ASGIApp, tenants: Tenants, gate: Gatekeeper | None = None):
        self.app = app
        self.tenants = tenants
        self.gate = gate

    async def _gate(self, scope: Scope, tenant: str | None) -> Gate | None:
        if self.gate is None:
            return None
        client = scope.get("client")
        try:
            return await self.gate.gate_async(client[0] if client else "unknown", tenant)
        except RedisError:
            log.warning("failed-authentication limit and rate limit skipped here: Redis unavailable")
            return None

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
        gate = await self._gate(scope, tenant)
        if gate is not None and gate.wait_s:
            await _too_many_failures(gate.wait_s)(scope, receive, send)
            return
        if tenant is None:
            await _unauthorized("the API key is not valid")(scope, receive, send)
            return
        if gate is not None and gate.over_rate is not None:
            await problem_response(gate.over_rate.problem, gate.over_rate.headers)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["tenant"], state[RATED] = tenant, gate is not None
        await self.app(scope, receive, send)
