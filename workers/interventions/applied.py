"""Apply a job's interventions (steering profile, knowledge edits) for the duration of one job.

Each intervention kind registers an applier: `APPLIERS[field] = apply(lm, value, store) -> context
manager`. `applied(lm, params)` enters every one whose field is set on `params`; leaving the block
(normally or by an exception) removes every hook and restores every weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

from pydantic import BaseModel

from common.artifacts import ArtifactMissing, ArtifactStore
from workers.errors import BadInput
from workers.models.loading import LM

Applier = Callable[[LM, object, ArtifactStore], AbstractContextManager]
APPLIERS: dict[str, Applier] = {}


def requested(params: BaseModel) -> list[str]:
    return [f for f in APPLIERS if getattr(params, f, None)]


@contextmanager
def applied(lm: LM, params: BaseModel, store: ArtifactStore | None = None) -> Iterator[None]:
    fields = requested(params)
    with ExitStack() as stack:
        if fields and store is None:
            raise RuntimeError(f"{fields} need the job's artifact store: pass Context(store=...)")
        for f in fields:
            try:
                stack.enter_context(APPLIERS[f](lm, getattr(params, f), store))
            except ArtifactMissing as e:  # deleted since submit, another owner's, or for another model
                raise BadInput(str(e)) from None
        yield


# Appliers of the interventions each kind may carry (modules that do not import this one: no cycle).
from workers.interventions.steering import apply as _apply_steering  # noqa: E402

APPLIERS["steering"] = _apply_steering

from workers.interventions.edits import apply as _apply_edits  # noqa: E402

APPLIERS["edits"] = _apply_edits

from workers.interventions.anchors import apply as _apply_anchors  # noqa: E402

APPLIERS["anchors"] = _apply_anchors
