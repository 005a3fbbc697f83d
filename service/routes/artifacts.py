"""GET/DELETE /v1/steering-profiles/{id} and /v1/edits/{id}, and their lists.

Artifacts are created by jobs (`steering_fit`, `knowledge_edit`); the API only reads and deletes
them. Another owner's artifact reads as absent (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from schemas.artifacts import ARTIFACT_KINDS, ArtifactPage, ArtifactView
from schemas.keys import artifact_index_key, artifact_key
from service.deps import Owner, QueueDep
from service.problems import not_found

router = APIRouter(tags=["artifacts"])
PROBLEM = {404: {"content": {"application/problem+json": {}}}}


def _load(queue, kind: str, artifact_id: str, owner: str) -> ArtifactView:
    raw = queue.redis.get(artifact_key(kind, artifact_id))
    view = ArtifactView.model_validate_json(raw) if raw else None
    if view is None or view.owner != owner:
        raise not_found(kind.rstrip("s").replace("-", " "))
    return view


def _routes(kind: str) -> None:
    @router.get(f"/v1/{kind}", response_model=ArtifactPage, name=f"list-{kind}")
    def list_artifacts(queue: QueueDep, owner: Owner, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       offset: Annotated[int, Query(ge=0, le=100_000)] = 0) -> ArtifactPage:
        index = artifact_index_key(kind, owner)
        ids = [i.decode() for i in queue.redis.zrevrange(index, offset, offset + limit)]
        raws = queue.redis.mget([artifact_key(kind, i) for i in ids[:limit]]) if ids else []
        items = [ArtifactView.model_validate_json(r) for r in raws if r]
        more = len(ids) > limit
        return ArtifactPage(items=items, next=f"/v1/{kind}?limit={limit}&offset={offset + limit}" if more else None)

    @router.get(f"/v1/{kind}/{{artifact_id}}", response_model=ArtifactView, responses=PROBLEM, name=f"get-{kind}")
    def get_artifact(artifact_id: str, queue: QueueDep, owner: Owner) -> ArtifactView:
        return _load(queue, kind, artifact_id, owner)

    @router.delete(f"/v1/{kind}/{{artifact_id}}", status_code=204, responses=PROBLEM, name=f"delete-{kind}")
    def delete_artifact(artifact_id: str, queue: QueueDep, owner: Owner) -> Response:
        _load(queue, kind, artifact_id, owner)
        with queue.redis.pipeline() as pipe:
            pipe.delete(artifact_key(kind, artifact_id))
            pipe.zrem(artifact_index_key(kind, owner), artifact_id)
            pipe.execute()
        return Response(status_code=204)


for _kind in ARTIFACT_KINDS:
    _routes(_kind)
