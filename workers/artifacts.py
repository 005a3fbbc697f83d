"""Steering profiles and edit sets, stored in Redis as JSON `ArtifactView`s.

Methods reach the store of the job they run in with `job_store()`: the RQ job gives the Redis
connection and the owner (tenant) recorded at submit time. Tests pass a store explicitly.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

from redis import Redis

from schemas.artifacts import ID_PREFIX, ArtifactView
from schemas.keys import artifact_index_key, artifact_key
from workers.errors import BadInput


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

    def get(self, kind: str, artifact_id: str, model: str) -> ArtifactView:
        """The owner's artifact for `model`; another owner's or a missing one reads as absent (422)."""
        raw = self.redis.get(artifact_key(kind, artifact_id))
        view = ArtifactView.model_validate(json.loads(raw)) if raw else None
        if view is None or view.owner != self.owner:
            raise BadInput(f"no {kind} artifact {artifact_id!r}")
        if view.model != model:
            raise BadInput(f"{kind} artifact {artifact_id!r} was made for model {view.model!r}, not {model!r}")
        return view


def job_store() -> ArtifactStore:
    """The artifact store of the RQ job running now."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("job_store() outside a job: pass an ArtifactStore explicitly")
    return ArtifactStore(job.connection, job.meta.get("owner", "anonymous"))
