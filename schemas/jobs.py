"""Job kinds, statuses, the discriminated `JobRequest` and the `JobView` the API answers.

Adding a kind: write `schemas/kinds/<kind>.py` (its input, params, result and `<Kind>Job` classes) and add
one line to `KINDS`.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, NamedTuple, Union

from pydantic import BaseModel, Field, JsonValue, TypeAdapter

from schemas.common import JobBase, JobInput, JobParams, Problem, Result
from schemas.kinds import (
    activation_patching,
    attention,
    attention_patterns,
    attribution,
    circuit,
    ffn_projection,
    generate,
    head_redundancy,
    icl_anchors,
    knowledge_edit,
    knowledge_neurons,
    logit_lens,
    probe,
    steering_fit,
    syntactic_attention,
)


class KindSpec(NamedTuple):
    job: type[JobBase]  # the kind's job class (schemas/kinds/<kind>.py): kind, input, params
    result: type[Result]
    tasks: tuple[str, ...]  # model tasks that can run it: "causal_lm", "encoder"
    timeout_s: int = 600  # RQ job timeout and the deadline checked between batches

    @property
    def input(self) -> type[JobInput]:
        return self.job.model_fields["input"].annotation  # type: ignore[return-value]

    @property
    def params(self) -> type[JobParams]:
        return self.job.model_fields["params"].annotation  # type: ignore[return-value]


KINDS: dict[str, KindSpec] = {
    "attribution": KindSpec(attribution.AttributionJob, attribution.AttributionResult, ("causal_lm",), 900),
    "generate": KindSpec(generate.GenerateJob, generate.GenerateResult, ("causal_lm",), 300),
    "attention": KindSpec(attention.AttentionJob, attention.AttentionResult, ("causal_lm", "encoder"), 300),
    "logit_lens": KindSpec(logit_lens.LogitLensJob, logit_lens.LogitLensResult, ("causal_lm", "encoder"), 300),
    "ffn_projection": KindSpec(ffn_projection.FfnProjectionJob, ffn_projection.FfnProjectionResult,
                               ("causal_lm", "encoder"), 300),
    "attention_patterns": KindSpec(attention_patterns.AttentionPatternsJob, attention_patterns.AttentionPatternsResult,
                                   ("causal_lm", "encoder"), 600),
    "probe": KindSpec(probe.ProbeJob, probe.ProbeResult, ("causal_lm", "encoder"), 900),
    "steering_fit": KindSpec(steering_fit.SteeringFitJob, steering_fit.SteeringFitResult, ("causal_lm",), 900),
    "knowledge_neurons": KindSpec(knowledge_neurons.KnowledgeNeuronsJob, knowledge_neurons.KnowledgeNeuronsResult,
                                  ("causal_lm",), 1800),
    "knowledge_edit": KindSpec(knowledge_edit.KnowledgeEditJob, knowledge_edit.KnowledgeEditResult,
                               ("causal_lm",), 1800),
    "activation_patching": KindSpec(activation_patching.ActivationPatchingJob, activation_patching.ActivationPatchingResult,
                                    ("causal_lm",), 1800),
    "circuit": KindSpec(circuit.CircuitJob, circuit.CircuitResult, ("causal_lm",), 3600),
    "head_redundancy": KindSpec(head_redundancy.HeadRedundancyJob, head_redundancy.HeadRedundancyResult,
                                ("causal_lm", "encoder"), 1800),
    "syntactic_attention": KindSpec(syntactic_attention.SyntacticAttentionJob,
                                    syntactic_attention.SyntacticAttentionResult, ("causal_lm", "encoder"), 600),
    "icl_anchors": KindSpec(icl_anchors.IclAnchorsJob, icl_anchors.IclAnchorsResult, ("causal_lm",), 1800),
}


class JobStatus(str, Enum):
    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


JOB_MODELS: dict[str, type[JobBase]] = {kind: spec.job for kind, spec in KINDS.items()}
JobRequest = Annotated[Union[tuple(JOB_MODELS.values())], Field(discriminator="kind")]  # type: ignore[valid-type]
job_request_adapter: TypeAdapter[Any] = TypeAdapter(JobRequest)


def parse_job(payload: dict[str, Any]) -> JobBase:
    return job_request_adapter.validate_python(payload)


class JobLinks(BaseModel):
    self: str


class JobWarning(BaseModel):
    """Something the caller should know about an accepted job (it does not stop the job)."""

    type: str = Field(description="a stable slug, e.g. `no-live-worker`")
    detail: str


class JobView(BaseModel):
    id: str
    kind: str
    model: str
    status: JobStatus
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: float | None = Field(None, ge=0.0, le=1.0)
    queue_position: int | None = None
    cancel_requested: bool = Field(
        False, description="a cancel was asked for this running job; it stops at its next progress check")
    # JsonValue, not Any: pydantic writes a NaN under Any as `null`; typed, it stays NaN and the API's
    # strict renderer (service/responses.py) refuses it instead of answering `null` for a number.
    result: dict[str, JsonValue] | None = None
    error: Problem | None = None
    warnings: list[JobWarning] = Field(
        default_factory=list, description="e.g. `no-live-worker`: queued for a model no live worker holds now")
    links: JobLinks


class JobPage(BaseModel):
    jobs: list[JobView]
    next: str | None = None
