"""Annotated dependency aliases for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from schemas.limits import Limits
from schemas.models import ModelSpec
from service.config import Settings
from service.metrics import ApiMetrics
from service.queue import JobQueue
from service.tokens import TokenCounter

ANONYMOUS = "anonymous"


def _from_state(name: str):
    def get(request: Request):
        return getattr(request.app.state, name)
    return Depends(get)


def owner(request: Request) -> str:
    """The tenant a request acts for. Open mode (no keys configured): everyone is `anonymous`."""
    return getattr(request.state, "tenant", ANONYMOUS)


SettingsDep = Annotated[Settings, _from_state("settings")]
LimitsDep = Annotated[Limits, _from_state("limits")]
QueueDep = Annotated[JobQueue, _from_state("queue")]
MetricsDep = Annotated[ApiMetrics, _from_state("metrics")]
TokensDep = Annotated[TokenCounter, _from_state("tokens")]
RegistryDep = Annotated[dict[str, ModelSpec], _from_state("registry")]
Owner = Annotated[str, Depends(owner)]
