"""kind -> the method that runs it. Adding a kind: one line here, one in `schemas.jobs.KINDS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pydantic import BaseModel

from schemas.kinds import attribution as attribution_schema
from schemas.kinds import generate as generate_schema
from workers.methods import attribution, generate


class MethodSpec(NamedTuple):
    params: type[BaseModel]
    result: type[BaseModel]
    run: Callable  # run(lm, request, progress) -> result


REGISTRY: dict[str, MethodSpec] = {
    "attribution": MethodSpec(attribution_schema.AttributionParams, attribution_schema.AttributionResult, attribution.run),
    "generate": MethodSpec(generate_schema.GenerateParams, generate_schema.GenerateResult, generate.run),
}
