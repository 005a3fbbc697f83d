"""`steering_fit`: fit an inference-time-intervention steering profile (Li et al. 2023, ITI).

Examples are prompt + completion pairs labelled true/false. Per (layer, head) a probe on the head
output at the last token; the `n_heads` best heads by validation accuracy each get a direction
(mass-mean shift or probe weight, unit length) and σ, the standard deviation of the activations
projected on it. The profile is stored; `generate`, `attribution` and `logit_lens` apply it with
`steering: {profile_id, alpha}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, Result, Strict, TextInput
from schemas.facts import Facts
from schemas.kinds.probe import MAX_EXAMPLES, Group, SplitParams
from schemas.limits import Limits, limited, over

# ITI intervenes on 48 of LLaMA-7B's 32 x 32 = 1024 heads; the default scales that share.
PAPER_HEADS, PAPER_TOTAL_HEADS = 48, 1024


class SteeringExample(TextInput):
    """`prompt` (or chat `messages`) + `completion`, labelled true (desired) or false."""

    completion: Annotated[str, Field(min_length=1, max_length=4096)]
    label: bool
    group: Group = None


class SteeringFitInput(JobInput):
    examples: Annotated[list[SteeringExample], Field(min_length=4, max_length=MAX_EXAMPLES,
                                                     json_schema_extra=limited("max_samples"))]

    @model_validator(mode="after")
    def _both_labels(self) -> SteeringFitInput:
        if len({e.label for e in self.examples}) < 2:
            raise ValueError("`examples` need both true and false labels")
        return self

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if len(self.examples) > limits.max_samples:
            yield over(["input", "examples"], len(self.examples), "max_samples", limits.max_samples)

    def over_facts(self, facts: Facts) -> Iterator[FieldError]:
        for i, example in enumerate(self.examples):
            yield from example.chat_errors(facts, ["input", "examples", i])


class SteeringFitParams(SplitParams):
    n_heads: Annotated[int, Field(ge=1, le=16384)] | None = Field(
        None, description="Heads to steer; default round(48/1024 × the model's layers × heads), at least 1."
    )
    direction: Literal["mass_mean", "probe"] = "mass_mean"

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        total = facts.n_layers * facts.n_heads if facts.n_layers and facts.n_heads else None
        if self.n_heads is not None and total is not None and self.n_heads > total:
            yield FieldError(loc=["params", "n_heads"], type="out_of_range",
                             msg=f"n_heads={self.n_heads} is over the model's {total} heads "
                                 f"(n_layers={facts.n_layers} × n_heads={facts.n_heads})",
                             ctx={"size": total, "value": self.n_heads})
        yield from super().over_facts(facts, input)


class SteeredHead(Strict):
    layer: int
    head: int
    accuracy: float
    sigma: float


class SteeringFitResult(Result):
    profile_id: str
    heads: list[SteeredHead]
    accuracy_grid: list[list[float]] = Field(description="validation accuracy [layer][head]")
    n_examples: int
    chance: float
    validation: str
    direction: str


class SteeringRef(Strict):
    """Apply a stored steering profile: α·σ·θ added to each selected head's output."""

    profile_id: Annotated[str, Field(pattern=r"^sp_[0-9a-f]{32}$")]
    alpha: Annotated[float, Field(ge=-1000.0, le=1000.0)] = 15.0


class SteeringFitJob(JobBase):
    kind: Literal["steering_fit"]
    input: SteeringFitInput
    params: SteeringFitParams = Field(default_factory=SteeringFitParams)
