"""`attribution`: which prompt tokens (or words) drive each target token.

Gradient methods (Simonyan et al. 2014 saliency; Shrikumar et al. 2016 input×gradient;
Sundararajan et al. 2017 integrated gradients) act on the input embeddings of a causal LM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, Result, Strict, TextInput
from schemas.interventions import Interventions
from schemas.limits import Limits, over

AttributionMethod = Literal["saliency", "input_x_gradient", "integrated_gradients"]
GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")

# Quadrature rules under Captum's names (captum.attr._utils.approximation_methods).
Rule = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


class AttributionInput(TextInput):
    target: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="Text to explain; absent: the model's greedy next `max_new_tokens` tokens."
    )


class AttributionParams(Interventions):
    method: AttributionMethod = "integrated_gradients"
    n_steps: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = 50
    tolerance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    rule: Rule = "gausslegendre"
    baseline: Literal["pad", "zero", "mask"] = "pad"
    fix_special_tokens: bool = Field(
        True, description="Keep BOS and chat-template markers at their embedding on the IG path."
    )
    granularity: Literal["token", "word"] = "token"
    target_metric: Literal["logprob", "prob", "logit"] = "logprob"
    max_new_tokens: Annotated[int, Field(ge=1, le=256)] = 1

    @model_validator(mode="after")
    def _steps_only_for_ig(self) -> AttributionParams:
        if self.n_steps == "auto" and self.method != "integrated_gradients":
            raise ValueError("n_steps='auto' applies to integrated_gradients only")
        return self

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if isinstance(self.n_steps, int) and self.n_steps > limits.max_steps:
            yield over(["params", "n_steps"], self.n_steps, "max_steps", limits.max_steps)
        if self.max_new_tokens > limits.max_new_tokens:
            yield over(["params", "max_new_tokens"], self.max_new_tokens, "max_new_tokens", limits.max_new_tokens)


class Convergence(Strict):
    """IG completeness check (Sundararajan et al. 2017, Prop. 1): per target token,
    delta = Σ attributions − (f(x) − f(baseline)) and relative_error = |delta| / |f(x) − f(baseline)|."""

    rule: Rule
    n_steps: int
    delta: list[float]
    relative_error: list[float]
    f_input: list[float]
    f_baseline: list[float]


class AttributionResult(Result):
    method: str
    target_metric: str
    input_tokens: list[str]
    target_tokens: list[str]
    target_generated: bool
    scores: list[list[float]] = Field(description="[target][input unit]")
    target_logprobs: list[float]
    unit_spans: list[list[int]] | None = Field(
        None, description="word granularity: [first, last) token index of each unit"
    )
    convergence: Convergence | None = None

