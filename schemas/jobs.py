"""Job kinds, statuses, the discriminated `JobRequest` and the `JobView` the API answers.

Adding a kind: write `schemas/kinds/<kind>.py` and add one line to `KINDS`.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import AnyHttpUrl, BaseModel, Field, JsonValue, TypeAdapter, create_model

from schemas.common import FieldError, ModelId, Problem, Strict
from schemas.facts import Facts
from schemas.kinds import (
    activation_patching,
    attention,
    attention_patterns,
    attribution,
    circuit,
    ffn_projection,
    generate,
    knowledge_edit,
    knowledge_neurons,
    logit_lens,
    probe,
    steering_fit,
)
from schemas.limits import Limits


class KindSpec(NamedTuple):
    input: type[Strict]
    params: type[Strict]
    result: type[BaseModel]
    tasks: tuple[str, ...]  # model tasks that can run it: "causal_lm", "encoder"
    timeout_s: int = 600  # RQ job timeout and the deadline checked between batches


KINDS: dict[str, KindSpec] = {
    "attribution": KindSpec(attribution.AttributionInput, attribution.AttributionParams,
                            attribution.AttributionResult, ("causal_lm",), 900),
    "generate": KindSpec(generate.GenerateInput, generate.GenerateParams, generate.GenerateResult,
                         ("causal_lm",), 300),
    "attention": KindSpec(attention.AttentionInput, attention.AttentionParams, attention.AttentionResult,
                          ("causal_lm", "encoder"), 300),
    "logit_lens": KindSpec(logit_lens.LogitLensInput, logit_lens.LogitLensParams, logit_lens.LogitLensResult,
                           ("causal_lm", "encoder"), 300),
    "ffn_projection": KindSpec(ffn_projection.FfnProjectionInput, ffn_projection.FfnProjectionParams,
                               ffn_projection.FfnProjectionResult, ("causal_lm", "encoder"), 300),
    "attention_patterns": KindSpec(attention_patterns.AttentionPatternsInput,
                                   attention_patterns.AttentionPatternsParams,
                                   attention_patterns.AttentionPatternsResult, ("causal_lm", "encoder"), 600),
    "probe": KindSpec(probe.ProbeInput, probe.ProbeParams, probe.ProbeResult, ("causal_lm", "encoder"), 900),
    "steering_fit": KindSpec(steering_fit.SteeringFitInput, steering_fit.SteeringFitParams,
                             steering_fit.SteeringFitResult, ("causal_lm",), 900),
    "knowledge_neurons": KindSpec(knowledge_neurons.KnowledgeNeuronsInput, knowledge_neurons.KnowledgeNeuronsParams,
                                  knowledge_neurons.KnowledgeNeuronsResult, ("causal_lm",), 1800),
    "knowledge_edit": KindSpec(knowledge_edit.KnowledgeEditInput, knowledge_edit.KnowledgeEditParams,
                               knowledge_edit.KnowledgeEditResult, ("causal_lm",), 1800),
    "activation_patching": KindSpec(activation_patching.ActivationPatchingInput,
                                    activation_patching.ActivationPatchingParams,
                                    activation_patching.ActivationPatchingResult, ("causal_lm",), 1800),
    "circuit": KindSpec(circuit.CircuitInput, circuit.CircuitParams, circuit.CircuitResult, ("causal_lm",), 3600),
}


class JobStatus(str, Enum):
    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


WebhookEvent = Literal["started", "finished", "failed", "canceled"]


class Webhook(Strict):
    url: AnyHttpUrl
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=4)] = ["finished", "failed"]
    secret: Annotated[str, Field(min_length=16, max_length=256)] | None = Field(
        None, description="Standard Webhooks secret (whsec_...); default: the tenant's configured one"
    )


class JobBase(Strict):
    model: ModelId
    webhook: Webhook | None = None

    def over_limits(self, limits: Limits) -> list[FieldError]:
        """Setting-based limits this request breaks (the schema holds the hard caps)."""
        errors: list[FieldError] = []
        for part in (self.input, self.params):  # type: ignore[attr-defined]
            check = getattr(part, "over_limits", None)
            if check is not None:
                errors.extend(check(limits))
        return errors

    def over_facts(self, facts: Facts) -> list[FieldError]:
        """Indices and params the model's facts, the prompt's length or the input itself rule out
        (schemas/facts.py): the input's hook gets the facts, the params' hook the facts and the input."""
        errors: list[FieldError] = []
        if (check := getattr(self.input, "over_facts", None)) is not None:  # type: ignore[attr-defined]
            errors.extend(check(facts))
        if (check := getattr(self.params, "over_facts", None)) is not None:  # type: ignore[attr-defined]
            errors.extend(check(facts, self.input))  # type: ignore[attr-defined]
        return errors


def _job_model(kind: str, spec: KindSpec) -> type[JobBase]:
    name = "".join(w.capitalize() for w in kind.split("_")) + "Job"
    return create_model(
        name,
        __base__=JobBase,
        kind=(Literal[kind], ...),  # type: ignore[valid-type]
        input=(spec.input, ...),
        params=(spec.params, Field(default_factory=spec.params)),
    )


JOB_MODELS: dict[str, type[JobBase]] = {kind: _job_model(kind, spec) for kind, spec in KINDS.items()}
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
