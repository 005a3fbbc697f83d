"""Stored artifacts: steering profiles (ITI, Li et al. 2023) and knowledge edit sets (Dai et al. 2022).

A job creates one; later jobs name it by id (`steering.profile_id`, `edits`). Every artifact
belongs to the tenant that made it and to one model id; `data` is the kind-specific body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

ArtifactKind = Literal["steering-profiles", "edits", "anchors"]
ARTIFACT_KINDS: tuple[str, ...] = ("steering-profiles", "edits", "anchors")
ID_PREFIX = {"steering-profiles": "sp_", "edits": "ed_", "anchors": "an_"}


class ArtifactView(BaseModel):
    id: str
    kind: ArtifactKind
    model: str
    owner: str
    created_at: datetime
    data: dict[str, Any]


class ArtifactPage(BaseModel):
    items: list[ArtifactView]
    next: str | None = None
