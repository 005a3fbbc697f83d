"""Annotated dependency aliases for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from schemas.limits import Limits
from schemas.models import ModelSpec
from service.auth import RATED
from service.config import Settings
from service.guards import Guards
from service.metrics import ApiMetrics
from service.queue import JobQueue
from service.tokens import TokenCounter

ANONYMOUS = "anonymous"


def _from_state(name: str):
    async def get(request: Request):  # async: FastAPI runs a sync dependency on the thread pool
        return getattr(request.app.state, name)
    return Depends(get)


async def owner(request: Request) -> str:
    """The tenant a request acts for (set by service.auth.ApiKeyAuth from the bearer key; open
    mode: everyone is `anonymous`). A route that acts for a tenant is rate limited: by the auth
    middleware's gate when there are keys, else here (on the event loop: service/guards.py)."""
    tenant = getattr(request.state, "tenant", ANONYMOUS)
    guards = getattr(request.app.state, "guards", None)
    if guards is not None and not getattr(request.state, RATED, False):
        await guards.rate_async(tenant)
    return tenant


SettingsDep = Annotated[Settings, _from_state("settings")]
LimitsDep = Annotated[Limits, _from_state("limits")]
QueueDep = Annotated[JobQueue, _from_state("queue")]
MetricsDep = Annotated[ApiMetrics, _from_state("metrics")]
TokensDep = Annotated[TokenCounter, _from_state("tokens")]
RegistryDep = Annotated[dict[str, ModelSpec], _from_state("registry")]
GuardsDep = Annotated[Guards, _from_state("guards")]
Owner = Annotated[str, Depends(owner)]
