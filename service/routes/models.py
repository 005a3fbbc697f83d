"""GET /v1/models, GET /v1/models/{id}: registry models with the facts their live workers publish and
the training checkpoints the registry declares (any job may run on one: `checkpoint`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from schemas.facts import ModelShape
from schemas.models import ModelSpec
from service.deps import QueueDep, RegistryDep
from service.problems import not_found

router = APIRouter(prefix="/v1/models", tags=["models"])

FACTS = ("architecture", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_size", "intermediate_size",
         "vocab_size", "device", "dtype", "revision", "kinds")


class CheckpointView(BaseModel):
    """A registry checkpoint as clients see it: where its weights sit on the workers' disks is server-side."""

    step: int
    source: str
    revision: str | None = None


class ModelView(ModelShape):
    id: str
    task: str
    workers: int
    architecture: str | None = None
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None
    kinds: list[str] = []
    checkpoints: list[CheckpointView] = Field(
        default_factory=list, description="training checkpoints in step order (empty: the base model only)")


class ModelList(BaseModel):
    models: list[ModelView]


@router.get("", response_model=ModelList)
def list_models(queue: QueueDep, registry: RegistryDep) -> ModelList:
    """Every registry model; facts come from live workers (`workers` = how many hold it now)."""
    facts, counts = _live(queue)
    return ModelList(models=[_view(mid, spec, facts, counts) for mid, spec in registry.items()])


@router.get("/{model_id:path}", response_model=ModelView, responses={404: {"content": {"application/problem+json": {}}}})
def get_model(model_id: str, queue: QueueDep, registry: RegistryDep) -> ModelView:
    """One registry model, with its checkpoints."""
    spec = registry.get(model_id)
    if spec is None:
        raise not_found("model")
    facts, counts = _live(queue)
    return _view(model_id, spec, facts, counts)


def _live(queue) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    facts: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for worker in queue.live_workers():
        for model in worker.get("models", []):
            facts[model["id"]] = model
            counts[model["id"]] = counts.get(model["id"], 0) + 1
    return facts, counts


def _view(mid: str, spec: ModelSpec, facts: dict[str, dict[str, Any]], counts: dict[str, int]) -> ModelView:
    checkpoints = [CheckpointView(step=c.step, source=c.source, revision=c.revision) for c in spec.checkpoints or ()]
    return ModelView(id=mid, task=spec.task, workers=counts.get(mid, 0), checkpoints=checkpoints,
                     **{k: facts[mid][k] for k in FACTS if mid in facts and k in facts[mid]})
