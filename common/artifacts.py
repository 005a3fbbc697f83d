"""The artifact store: steering profiles and edit sets, kept in Redis as JSON `ArtifactView`s.

The one place that reads and writes artifacts: jobs put and get them (workers), the API lists,
shows, deletes and checks them at submit. An owner sees only its own artifacts: another owner's
reads as absent.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

from redis import Redis

from schemas.artifacts import ID_PREFIX, ArtifactView
from schemas.keys import artifact_index_key, artifact_key


class ArtifactMissing(LookupError):
    """The named artifact is absent, another owner's, or made for another model (the message says which)."""


class ArtifactStore:
    def __init__(self, connection: Redis, owner: str):
        self.redis = connection
        self.owner = owner

    def put(self, kind: str, model: str, data: dict) -> ArtifactView:
        view = ArtifactView(id=ID_PREFIX[kind] + uuid.uuid4().hex, kind=kind, model=model, owner=self.owner,
                            created_at=datetime.now(timezone.utc), data=data)
        with self.redis.pipeline() as pipe:
            pipe.set(artifact_key(kind, view.id), view.model_dump_json())
            pipe.zadd(artifact_index_key(kind, self.owner), {view.id: time.time()})
            pipe.execute()
        return view

    def find(self, refs: list[tuple[str, str]]) -> list[ArtifactView | None]:
        """The owner's artifacts for `(kind, id)` pairs, in one round trip; None where absent or not theirs."""
        raws = self.redis.mget([artifact_key(kind, artifact_id) for kind, artifact_id in refs]) if refs else []
        views = [ArtifactView.model_validate(json.loads(raw)) if raw else None for raw in raws]
        return [v if v is not None and v.owner == self.owner else None for v in views]

    def get(self, kind: str, artifact_id: str, model: str | None = None) -> ArtifactView:
        """The owner's artifact (for `model` when given); raises ArtifactMissing otherwise."""
        (view,) = self.find([(kind, artifact_id)])
        if (problem := mismatch(kind, artifact_id, view, model)) is not None:
            raise ArtifactMissing(problem)
        return view  # type: ignore[return-value]

    def page(self, kind: str, limit: int, offset: int) -> tuple[list[ArtifactView], bool]:
        """The owner's newest artifacts of `kind` from `offset`, and whether more follow."""
        ids = [i.decode() for i in self.redis.zrevrange(artifact_index_key(kind, self.owner), offset, offset + limit)]
        views = self.find([(kind, i) for i in ids[:limit]])
        return [v for v in views if v is not None], len(ids) > limit

    def delete(self, kind: str, artifact_id: str) -> None:
        self.get(kind, artifact_id)
        with self.redis.pipeline() as pipe:
            pipe.delete(artifact_key(kind, artifact_id))
            pipe.zrem(artifact_index_key(kind, self.owner), artifact_id)
            pipe.execute()


def mismatch(kind: str, artifact_id: str, view: ArtifactView | None, model: str | None) -> str | None:
    """Why `view` cannot serve a job on `model`, or None when it can."""
    if view is None:
        return f"no {kind} artifact {artifact_id!r}"
    if model is not None and view.model != model:
        return f"{kind} artifact {artifact_id!r} was made for model {view.model!r}, not {model!r}"
    return None
