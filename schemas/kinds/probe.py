"""`probe`: linear probes (logistic regression) on a model's internal activations.

One probe per site (each layer for `residual` / `mlp`, each layer and query head for `attn_head`),
fitted on the activation at the last token (or the token mean) and scored on held-out examples
(seeded k-fold or one held-out split). Alain & Bengio 2016; the per-head variant follows Li et
al. 2023 (ITI), whose probes read the input of the attention output projection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Prompt, Result, Strict
from schemas.facts import Facts, index_errors, split_error
from schemas.limits import Limits, limited, over

MAX_EXAMPLES = 4096  # hard cap; the setting `max_samples` is the working limit

Site = Literal["residual", "attn_head", "mlp"]
Label = Annotated[str, Field(min_length=1, max_length=128)] | int | bool


Group = Annotated[str | None, Field(
    max_length=256, description="Examples sharing a group stay on one side of every split (e.g. one question's answers).")]


class ProbeExample(Strict):
    text: Prompt
    label: Label
    group: Group = None


class ProbeInput(JobInput):
    examples: Annotated[list[ProbeExample], Field(min_length=4, max_length=MAX_EXAMPLES,
                                                  json_schema_extra=limited("max_samples"))]

    @model_validator(mode="after")
    def _two_classes(self) -> ProbeInput:
        if len({repr(e.label) for e in self.examples}) < 2:
            raise ValueError("`examples` need at least two distinct labels")
        return self

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if len(self.examples) > limits.max_samples:
            yield over(["input", "examples"], len(self.examples), "max_samples", limits.max_samples)


class SplitParams(JobParams):
    """How probes are validated: seeded (stratified, group-aware) k-fold, or one held-out split."""

    folds: Annotated[int, Field(ge=2, le=20)] = 5
    holdout: Annotated[float, Field(gt=0.0, lt=1.0)] | None = Field(
        None, description="Validate on one held-out fraction instead of k-fold (the ITI paper uses 0.2)."
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    C: Annotated[float, Field(gt=0.0, le=1e6)] = Field(1.0, description="Inverse L2 strength of the logistic regression.")

    def split_error(self, labels: list[Any], groups: list[str | None] | None) -> FieldError | None:
        """Whether `folds` (or `holdout`) can split examples with these labels and groups."""
        return split_error(self.folds, self.holdout, labels, groups)

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        examples = getattr(input, "examples", None)
        if examples and (err := self.split_error([e.label for e in examples], [e.group for e in examples])):
            yield err


class ProbeParams(SplitParams):
    site: Site = "residual"
    position: Literal["last", "mean"] = "last"
    layers: Annotated[list[Annotated[int, Field(ge=0, le=1023)]], Field(min_length=1, max_length=1024)] | None = None
    top: Annotated[int, Field(ge=1, le=1024)] = Field(5, description="How many best sites to list.")

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        yield from index_errors(facts, (self.layers, "layers", "n_layers"), negatives=False)
        yield from super().over_facts(facts, input)


class SiteAccuracy(Strict):
    layer: int
    head: int | None = None
    accuracy: float
    accuracy_std: float


class ProbeResult(Result):
    site: Site
    position: str
    layers: list[int]
    classes: list[str | int | bool]
    n_examples: int
    chance: float = Field(description="accuracy of always answering the majority class")
    validation: str = Field(description="'k-fold (k=5)' or 'holdout (0.2)'")
    accuracy: list[float] | list[list[float]] = Field(
        description="mean validation accuracy: [layer] for residual/mlp, [layer][head] for attn_head"
    )
    accuracy_std: list[float] | list[list[float]]
    best: list[SiteAccuracy]


class ProbeJob(JobBase):
    kind: Literal["probe"]
    input: ProbeInput
    params: ProbeParams = Field(default_factory=ProbeParams)
