"""`generate`: greedy or sampled continuation with per-token log-probabilities."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field

from schemas.common import FieldError, JobBase, Result, TextInput
from schemas.interventions import Interventions
from schemas.limits import Limits, limited, over


class GenerateInput(TextInput):
    pass


class GenerateParams(Interventions):
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(32, json_schema_extra=limited("max_new_tokens"))
    temperature: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0, le=100_000)] = 0
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0
    stop_at_eos: bool = True
    compare_baseline: bool = Field(
        False, description="Also return the generation without interventions (same seed), as `baseline_*`."
    )

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if self.max_new_tokens > limits.max_new_tokens:
            yield over(["params", "max_new_tokens"], self.max_new_tokens, "max_new_tokens", limits.max_new_tokens)


class GenerateResult(Result):
    text: str
    tokens: list[str]
    token_ids: list[int]
    token_logprobs: list[float] = Field(
        description="log p(token | prefix) under the model's untempered distribution"
    )
    finish_reason: str
    prompt_tokens: int
    baseline_text: str | None = None
    baseline_tokens: list[str] | None = None
    baseline_token_ids: list[int] | None = None
    baseline_token_logprobs: list[float] | None = None


class GenerateJob(JobBase):
    kind: Literal["generate"]
    input: GenerateInput
    params: GenerateParams = Field(default_factory=GenerateParams)
