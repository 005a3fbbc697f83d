"""KServe's v1 explainer protocol (`POST /v1/models/{name}:explain`), mapped onto `attribution` jobs.

An instance is a prompt (a string) or an attribution input object (`prompt` or `messages`, optional
`target`); `parameters` are the attribution params, applied to every instance (absent: defaults).
The answer is KServe's `{"explanations": [...]}`, one attribution result per instance, in order.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, JsonValue

from schemas.common import Prompt, Strict
from schemas.jobs import JobView
from schemas.kinds.attribution import AttributionInput, AttributionParams

MAX_INSTANCES = 32  # one attribution job each


class ExplainRequest(Strict):
    instances: Annotated[list[Prompt | AttributionInput], Field(min_length=1, max_length=MAX_INSTANCES)]
    parameters: AttributionParams | None = None


class ExplainResponse(BaseModel):
    explanations: list[dict[str, JsonValue]] = Field(description="AttributionResult per instance, in order")


class ExplainPending(BaseModel):
    """Not all finished within the wait: the jobs to poll (`GET /v1/jobs/{id}`), in instance order."""

    jobs: list[JobView]
