"""`knowledge_neurons`: locate the FFN neurons that express one fact (Dai et al. 2022, "Knowledge
Neurons in Pretrained Transformers") and measure what suppressing or enhancing them does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Prompt, Result, Strict
from schemas.common import QuadratureRule as Rule
from schemas.facts import Facts, index_errors
from schemas.limits import Limits, limited, over

Answer = Annotated[str, Field(min_length=1, max_length=256)]
MAX_FACT_PROMPTS = 16
MAX_CONTROL_PROMPTS = 32
MAX_ANSWER_TOKENS = 8


class FactInput(JobInput):
    prompts: Annotated[list[Prompt], Field(min_length=1, max_length=MAX_FACT_PROMPTS)] = Field(
        description="Paraphrases of one fact, each followed directly by the answer (mind the leading space)."
    )
    answer: Answer = Field(description="The answer text that continues every prompt, e.g. ' Paris'.")


class KnowledgeNeuronsInput(FactInput):
    control_prompts: Annotated[list[Prompt], Field(max_length=MAX_CONTROL_PROMPTS)] = Field(
        default_factory=list, description="Other facts: their top-1 next token should not move."
    )


class LocateParams(JobParams):
    """How neurons are located (shared by `knowledge_neurons` and `knowledge_edit`)."""

    n_steps: Annotated[int, Field(ge=1, le=1024)] = Field(20, json_schema_extra=limited("max_steps"))
    rule: Rule = Field("gausslegendre", description="Quadrature rule (Captum's names); the reference code "
                                                    "uses riemann_left")
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.2, description="Keep a prompt's neurons whose score is over threshold × that prompt's max score.")
    sharing_ratio: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["adaptive"] = Field(
        "adaptive", description="Keep neurons kept on at least this share of the prompts; 'adaptive': start at "
                                "0.7 and move by 0.05 until the count lands in `target_count`.")
    target_count: Annotated[tuple[int, int], Field()] = (2, 5)
    max_neurons: Annotated[int, Field(ge=1, le=256)] = 32
    layers: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=256)] | None = None
    filter_controls: bool = Field(
        True, description="With control prompts (the caller's, or knowledge_neurons' built-in ones): drop "
                          "candidate neurons that also matter for a control prompt's own top-1 next token (IG "
                          "score over contrast_threshold × that prompt's max), before the sharing ratio picks the "
                          "count; one more IG pass per control prompt. Such neurons serve other facts too (relation "
                          "or output neurons). false: the paper's unfiltered set.")
    contrast_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1, description="filter_controls: a neuron matters for a control prompt when its score is over this × that "
                         "prompt's max score (half the fact's `threshold` by default: docs/knowledge.md).")
    contrast_ratio: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.1, description="filter_controls: drop a candidate that matters for at least this share of the control "
                         "prompts; 0.1 (the reference code's cut-off for relation neurons) is any one of up to 10.")

    @model_validator(mode="after")
    def _range(self) -> LocateParams:
        lo, hi = self.target_count
        if not 1 <= lo <= hi:
            raise ValueError("target_count must be [lo, hi] with 1 <= lo <= hi")
        return self

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if self.n_steps > limits.max_steps:
            yield over(["params", "n_steps"], self.n_steps, "max_steps", limits.max_steps)

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), negatives=False)


class KnowledgeNeuronsParams(LocateParams):
    builtin_controls: bool = Field(
        True, description="With no input.control_prompts: filter against (and report the effect on) the built-in "
                          "control facts (workers/knowledge/control_facts.py: 8 short facts from unrelated domains), so that "
                          "the default neurons are specific to the fact (docs/knowledge.md); their IG scores are "
                          "computed once per worker and IG settings, then cached. false: no controls unless given.")
    enhance_factor: Annotated[float, Field(gt=1.0, le=100.0)] = 2.0
    random_baseline: bool = Field(
        True, description="Also suppress as many random neurons in the same layers (seeded) for comparison.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class Neuron(Strict):
    layer: Annotated[int, Field(ge=0)]
    index: Annotated[int, Field(ge=0)]
    score: float | None = Field(None, description="Mean IG score over the prompts")
    shared_by: float | None = Field(None, description="Share of prompts where the neuron passed the threshold")


class FilteredNeuron(Neuron):
    controls: list[int] = Field(description="Why it was dropped: the indices of the control prompts for whose own "
                                            "top-1 token its score is over contrast_threshold × that prompt's max")


class PromptEffect(Strict):
    """Answer probability on one prompt: mean over the answer's tokens, teacher-forced."""

    prompt: str
    prob: float
    suppressed: float
    enhanced: float
    random_suppressed: float | None = None
    top1_token: str | None = Field(None, description="controls: the model's own next token, whose prob is shown")


class KnowledgeNeuronsResult(Result):
    answer_tokens: list[str]
    neurons: list[Neuron]
    sharing_ratio: float = Field(description="The sharing ratio that was used (after adaptation)")
    coarse_counts: list[int] = Field(description="Neurons over the threshold, per prompt")
    filtered_neurons: list[FilteredNeuron] | None = Field(
        None, description="filter_controls: neurons shared by at least the used sharing ratio of the prompts but "
                          "dropped as mattering for control prompts (best `max_neurons` by score); null: not filtered")
    filtered_count: int | None = Field(None, description="How many neurons the filter dropped at that ratio")
    random_neurons: list[Neuron] | None = None
    control_set: Literal["input", "builtin"] | None = Field(
        None, description="Which control prompts filtered and are in `controls`: the caller's (`input`), the "
                          "built-in control facts (`builtin`), or none")
    prompts: list[PromptEffect]
    controls: list[PromptEffect]
    summary: dict[str, float] = Field(
        description="Mean relative change of the probability (after/before − 1) per intervention and prompt set")


class KnowledgeNeuronsJob(JobBase):
    kind: Literal["knowledge_neurons"]
    input: KnowledgeNeuronsInput
    params: KnowledgeNeuronsParams = Field(default_factory=KnowledgeNeuronsParams)
