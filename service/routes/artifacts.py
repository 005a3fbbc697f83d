"""GET/DELETE /v1/steering-profiles/{id} and /v1/edits/{id}, and their lists.

Artifacts are created by jobs (`steering_fit`, `knowledge_edit`); the API only reads and deletes
them. Another owner's artifact reads as absent (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from common.artifacts import ArtifactMissing, ArtifactStore
from schemas.artifacts import ARTIFACT_KINDS, ArtifactPage, ArtifactView
from service.deps import Owner, QueueDep
from service.problems import not_found

router = APIRouter(tags=["artifacts"])
PROBLEM = {404: {"content": {"application/problem+json": {}}}}


def _load(queue, kind: str, artifact_id: str, owner: str) -> ArtifactView:
    try:
        return ArtifactStore(queue.redis, owner).get(kind, artifact_id)
    except ArtifactMissing:
        raise not_found(kind.rstrip("s").replace("-", " ")) from None


def _routes(kind: str) -> None:
    @router.get(f"/v1/{kind}", response_model=ArtifactPage, name=f"list-{kind}")
    def list_artifacts(queue: QueueDep, owner: Owner, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> ArtifactPage:
        items, more = ArtifactStore(queue.redis, owner).page(kind, limit, offset)
        return ArtifactPage(items=items, next=f"/v1/{kind}?limit={limit}&offset={offset + limit}" if more else None)

    @router.get(f"/v1/{kind}/{{artifact_id}}", response_model=ArtifactView, responses=PROBLEM, name=f"get-{kind}")
    def get_artifact(artifact_id: str, queue: QueueDep, owner: Owner) -> ArtifactView:
        return _load(queue, kind, artifact_id, owner)

    @router.delete(f"/v1/{kind}/{{artifact_id}}", status_code=204, responses=PROBLEM, name=f"delete-{kind}")
    def delete_artifact(artifact_id: str, queue: QueueDep, owner: Owner) -> Response:
        _load(queue, kind, artifact_id, owner)
        ArtifactStore(queue.redis, owner).delete(kind, artifact_id)
        return Response(status_code=204)


for _kind in ARTIFACT_KINDS:
    _routes(_kind)
