"""Base model, Problem (RFC 9457), provenance, the job protocol (JobBase, JobInput, JobParams, Result)
and the text-input shapes every kind shares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

if TYPE_CHECKING:
    from schemas.facts import Facts
    from schemas.limits import Limits

# A prompt is bounded in characters here (cheap, before any tokenizer); the token limit
# (`Limits.max_prompt_tokens`) is checked with the model's own tokenizer.
MAX_PROMPT_CHARS = 32_768

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
MODEL_ID_PATTERN = r"^[A-Za-z0-9._:/-]+$"
ModelId = Annotated[str, Field(min_length=1, max_length=128, pattern=MODEL_ID_PATTERN)]


class Strict(BaseModel):
    """Base of every wire model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    """One failing field of a validation error."""

    loc: list[str | int]
    msg: str
    type: str
    ctx: dict[str, Any] | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, used for every error the API answers and every failed job."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class JobInput(Strict):
    """Base of every kind's `input`: the hooks the API (at submit) and the worker (before running)
    call. Each returns the field errors it finds; the defaults find none."""

    def over_limits(self, limits: Limits) -> Iterable[FieldError]:
        """Setting-based limits this input breaks (the schema holds the hard caps)."""
        return ()

    def over_facts(self, facts: Facts) -> Iterable[FieldError]:
        """What the model's facts (layers, heads, vocabulary, chat template) rule out."""
        return ()


class JobParams(Strict):
    """Base of every kind's `params`, with the same hooks as `JobInput` (the facts hook also sees the
    input: positions are checked against the prompt) and the result-size estimate."""

    def over_limits(self, limits: Limits) -> Iterable[FieldError]:
        return ()

    def over_facts(self, facts: Facts, input: JobInput) -> Iterable[FieldError]:
        return ()

    def over_result_limit(self, n_tokens: int, facts: dict[str, Any], limits: Limits) -> Iterable[FieldError]:
        """Errors when the result for a prompt of `n_tokens` would be over `max_result_bytes`, with the
        selection that fits (schemas/sizes.py); kinds whose result size follows from the prompt override it."""
        return ()


# Integral approximation rules (Captum's names), for the kinds that integrate gradients along a path.
QuadratureRule = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]

WebhookEvent = Literal["started", "finished", "failed", "canceled"]


class Webhook(Strict):
    url: AnyHttpUrl
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=4)] = ["finished", "failed"]
    secret: Annotated[str, Field(min_length=16, max_length=256)] | None = Field(
        None, description="Standard Webhooks secret (whsec_...); default: the tenant's configured one"
    )


class JobBase(Strict):
    """Base of every kind's job class (`class AttributionJob(JobBase)` in schemas/kinds/<kind>.py),
    which adds `kind: Literal[...]`, `input` and `params`."""

    model: ModelId
    webhook: Webhook | None = None
    kind: str
    input: JobInput
    params: JobParams
    checkpoint: Annotated[int, Field(ge=0)] | None = Field(
        None, description="run on this training step of the model (its registry entry's `checkpoints`); "
                          "absent: the base model")
    checkpoints: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=256)] | Literal["all"] | None = Field(
        None, description="a sweep: run the job once per listed training step (or `\"all\"` of the model's "
                          "checkpoints); the job's result is the `series` in step order (docs/checkpoints.md)")

    @field_validator("checkpoints")
    @classmethod
    def _one_checkpoint_field(cls, value: list[int] | str | None, info: ValidationInfo) -> list[int] | str | None:
        # a field validator (not a model one) so the 422 names `checkpoints`; `checkpoint` is declared first
        if value is not None and info.data.get("checkpoint") is not None:
            raise ValueError("give at most one of `checkpoint` (one step) or `checkpoints` (a sweep)")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("`checkpoints` lists a step twice")
        return value

    def over_limits(self, limits: Limits) -> list[FieldError]:
        """Setting-based limits this request breaks (the schema holds the hard caps)."""
        return [*self.input.over_limits(limits), *self.params.over_limits(limits)]

    def over_facts(self, facts: Facts) -> list[FieldError]:
        """Indices and params the model's facts, the prompt's length or the input itself rule out
        (schemas/facts.py)."""
        return [*self.input.over_facts(facts), *self.params.over_facts(facts, self.input)]


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class TextInput(JobInput):
    """`prompt` (a string) or `messages` (chat turns rendered with the model's chat template)."""

    prompt: Prompt | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_of_prompt_or_messages(self) -> TextInput:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` or `messages`")
        if self.messages is not None and not any(m.content for m in self.messages):
            raise ValueError("`messages` has no content")
        return self

    def chat_errors(self, facts: Facts, loc: list[str | int]) -> list[FieldError]:
        """`messages` need the model's chat template (`loc`: where this input sits)."""
        if self.messages is not None and facts.has_chat_template is False:
            return [FieldError(loc=[*loc, "messages"], msg="this model has no chat template; send `prompt`",
                               type="no_chat_template")]
        return []

    def over_facts(self, facts: Facts) -> list[FieldError]:
        return self.chat_errors(facts, ["input"])


class Provenance(BaseModel):
    """Where a result came from: enough to reproduce it."""

    model: str
    revision: str | None = None
    checkpoint: int | None = Field(None, description="the training step the job ran on; None: the base model")
    dtype: str
    device: str
    kind: str
    method: str | None = None
    params: dict[str, Any]
    versions: dict[str, str]
    elapsed_s: float


class ResultWarning(BaseModel):
    """Something about a finished result the caller should weigh before trusting it (the numbers are
    still returned): e.g. `ig-not-converged` when IG's completeness error is over `tolerance`."""

    type: str = Field(description="a stable slug, e.g. `ig-not-converged`")
    detail: str
    ctx: dict[str, Any] | None = Field(None, description="the figures behind it, e.g. relative_error, tolerance")


class Result(Strict):
    """Base of every kind's result.

    `ser_json_inf_nan="constants"`: NaN and ±inf stay NaN/±inf in `model_dump(mode="json")` (pydantic
    would write `null` for floats under `Any`), so the worker's strict JSON check sees them and fails
    the job (workers/finite.py) instead of shipping `null` where a number is promised."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    provenance: Provenance = Field(description="the model, revision, params and versions that made it")
    warnings: list[ResultWarning] = Field(default_factory=list, description="empty when nothing needs flagging")

    def scalars(self) -> dict[str, float]:
        """The summary numbers a sweep across training checkpoints tracks for this kind (the series and
        change points of docs/checkpoints.md). Default: every top-level `float` field that is set and
        finite (counts are `int` and left out); a kind overrides it to name its own, e.g. a score and
        a loss, or a best-of over a per-layer list."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, float) and value == value and abs(value) != float("inf"):
                out[name] = value
        return out
