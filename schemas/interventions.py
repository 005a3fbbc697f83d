"""Per-job interventions other kinds can carry in their params: ITI steering (`steering`),
knowledge edits (`edits`) and anchor re-weighting (`anchors`). Applied by hooks for that job only; the shared weights never change.

`Interventions` is the params mixin (GenerateParams, AttributionParams, LogitLensParams inherit it).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.common import JobParams
from schemas.kinds.icl_anchors import AnchorsRef
from schemas.kinds.steering_fit import SteeringRef

MAX_EDITS = 16
EditId = Annotated[str, Field(pattern=r"^ed_[0-9a-f]{32}$")]


class Interventions(JobParams):
    steering: SteeringRef | None = None
    edits: Annotated[list[EditId], Field(min_length=1, max_length=MAX_EDITS)] | None = Field(
        None, description="Knowledge edit sets (ids from `knowledge_edit`) applied for this job only, in order."
    )
    anchors: AnchorsRef | None = Field(
        None, description="Anchor re-weighting (β from `icl_anchors`) applied to the prompt's label words for this job only."
    )
