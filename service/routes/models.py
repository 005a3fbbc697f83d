"""GET /v1/models: registry models with the facts their live workers publish."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.deps import QueueDep, RegistryDep

router = APIRouter(prefix="/v1/models", tags=["models"])

FACTS = ("architecture", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden_size", "intermediate_size",
         "vocab_size", "device", "dtype", "revision", "kinds")


class ModelView(BaseModel):
    id: str
    task: str
    workers: int
    architecture: str | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None
    kinds: list[str] = []


class ModelList(BaseModel):
    models: list[ModelView]


@router.get("", response_model=ModelList)
def list_models(queue: QueueDep, registry: RegistryDep) -> ModelList:
    """Every registry model; facts come from live workers (`workers` = how many hold it now)."""
    facts: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for worker in queue.live_workers():
        for model in worker.get("models", []):
            facts[model["id"]] = model
            counts[model["id"]] = counts.get(model["id"], 0) + 1
    return ModelList(models=[
        ModelView(id=mid, task=spec.task, workers=counts.get(mid, 0),
                  **{k: facts[mid][k] for k in FACTS if mid in facts and k in facts[mid]})
        for mid, spec in registry.items()
    ])
