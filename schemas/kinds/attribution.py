"""`attribution`: which prompt tokens (or words) drive each target token.

Gradient methods (Simonyan et al. 2014 saliency; Shrikumar et al. 2016 input×gradient;
Sundararajan et al. 2017 integrated gradients) act on the input embeddings of a causal LM.
Perturbation methods (occlusion, Zeiler & Fergus 2014; LIME, Ribeiro et al. 2016; KernelSHAP,
Lundberg & Lee 2017) remove units (tokens or words) by replacing them with the baseline token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, Result, Strict, TextInput
from schemas.common import QuadratureRule as Rule
from schemas.facts import Facts
from schemas.interventions import Interventions
from schemas.limits import Limits, limited, over

AttributionMethod = Literal["saliency", "input_x_gradient", "integrated_gradients", "occlusion", "lime", "kernel_shap"]
GRADIENT_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
PERTURBATION_METHODS = ("occlusion", "lime", "kernel_shap")

# Quadrature rules under Captum's names (captum.attr._utils.approximation_methods).


class AttributionInput(TextInput):
    target: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="Text to explain; absent: the model's greedy next `max_new_tokens` tokens."
    )


class AttributionParams(Interventions):
    method: AttributionMethod = "integrated_gradients"
    n_steps: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(50, json_schema_extra=limited("max_steps"))
    tolerance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.05
    rule: Rule = "gausslegendre"
    baseline: Literal["pad", "zero", "mask"] = "pad"
    fix_special_tokens: bool = Field(
        True, description="Keep BOS and chat-template markers at their embedding on the IG path."
    )
    fix_first_token: bool = Field(
        True, description="Keep position 0 (the attention sink) at its embedding on the IG path."
    )
    granularity: Literal["token", "word"] = "token"
    target_metric: Literal["logprob", "prob", "logit"] = "logprob"
    max_new_tokens: Annotated[int, Field(ge=1, le=256)] = Field(1, json_schema_extra=limited("max_new_tokens"))
    n_samples: Annotated[int, Field(ge=1, le=65536)] = Field(
        200, description="lime, kernel_shap: perturbed inputs to score", json_schema_extra=limited("max_samples")
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(
        0, description="lime, kernel_shap and faithfulness's random order: same seed, same result"
    )
    window: Annotated[int, Field(ge=1, le=512)] = Field(
        1, description="occlusion: units removed together (sliding, stride 1); scores average the windows"
    )
    kernel_width: Annotated[float, Field(gt=0.0, le=1e6)] = Field(
        25.0, description="lime: width of the exponential kernel on 100 × cosine distance (lime's text default)"
    )
    faithfulness: bool = Field(
        False, description="also score comprehensiveness, sufficiency (AOPC) and the deletion curve"
    )

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
        if self.method in ("lime", "kernel_shap") and self.n_samples > limits.max_samples:
            yield over(["params", "n_samples"], self.n_samples, "max_samples", limits.max_samples)

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        if self.baseline == "mask" and facts.has_mask_token is False:
            yield FieldError(loc=["params", "baseline"], msg="this model has no mask token; use baseline 'zero' "
                             "or 'pad'", type="no_mask_token")


class Convergence(Strict):
    """IG completeness check (Sundararajan et al. 2017, Prop. 1): per target token,
    delta = Σ attributions − (f(x) − f(baseline)) and relative_error = |delta| / |f(x) − f(baseline)|."""

    rule: Rule
    n_steps: int
    delta: list[float]
    relative_error: list[float]
    f_input: list[float]
    f_baseline: list[float]


class Efficiency(Strict):
    """KernelSHAP efficiency (Lundberg & Lee 2017, property 1): per target token,
    delta = Σ attributions − (f(x) − f(all units removed)); 0 up to float error."""

    f_input: list[float]
    f_baseline: list[float]
    delta: list[float]


class Surrogate(Strict):
    """LIME's weighted ridge surrogate per target token: intercept and weighted R² of the fit."""

    kernel_width: float
    intercept: list[float]
    r2: list[float]


class PerturbationStats(Strict):
    """Work a perturbation method did: masks asked for, distinct masks run, batched forwards,
    token positions run, and positions the same masks would cost without prefix sharing."""

    masks: int
    distinct: int
    forwards: int
    positions_run: int
    positions_plain: int


class Faithfulness(Strict):
    """ERASER comprehensiveness / sufficiency at k% (and AOPC = their means) and the deletion curve,
    on F = Σ over target tokens of the target metric; `replacement` is what removal puts in."""

    replacement: str
    ks: list[int]
    f_input: float
    comprehensiveness: list[float]
    sufficiency: list[float]
    aopc_comprehensiveness: float
    aopc_sufficiency: float
    deletion_curve: list[float] = Field(description="F after removing the top 0, 1, ..., U units")
    deletion_auc: float
    random_deletion_curve: list[float] = Field(description="the same for a random order (seeded)")
    random_deletion_auc: float


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
    base_value: list[float] | None = Field(None, description="kernel_shap: f(all units removed) per target token")
    efficiency: Efficiency | None = None
    surrogate: Surrogate | None = None
    perturbation: PerturbationStats | None = None
    replacement: str | None = Field(None, description="perturbation methods: what a removed token becomes")
    faithfulness: Faithfulness | None = None


class AttributionJob(JobBase):
    kind: Literal["attribution"]
    input: AttributionInput
    params: AttributionParams = Field(default_factory=AttributionParams)
