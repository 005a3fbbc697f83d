"""kind -> the method that runs it: `workers/methods/<kind>.py`, found by the kind's slug.

Adding a kind adds no line here: the kinds are `schemas.jobs.KINDS`, and each has its method module
under the same name (`tests/unit/test_schemas.py` checks every module follows the protocol,
`run(lm, job: <Kind>Job, ctx: Context) -> <Kind>Result`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

from pydantic import BaseModel

from schemas.jobs import KINDS


class MethodSpec(NamedTuple):
    params: type[BaseModel]
    result: type[BaseModel]
    run: Callable  # run(lm, job, ctx) -> result


METHODS: dict[str, ModuleType] = {kind: importlib.import_module(f"workers.methods.{kind}") for kind in KINDS}

REGISTRY: dict[str, MethodSpec] = {
    kind: MethodSpec(KINDS[kind].params, KINDS[kind].result, module.run) for kind, module in METHODS.items()
}
