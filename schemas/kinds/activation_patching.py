"""`activation_patching`: causal effects of model components on a clean/corrupted prompt pair
(Meng et al. 2022 "causal tracing"; Wang et al. 2022 §3; Heimersheim & Nanda 2024, "How to use and
interpret activation patching"), exact or by its first-order estimate, attribution patching
(Nanda 2023; AtP, Kramár et al. 2024).

The metric is the logit difference `answer − wrong_answer` at the last position (or the answer's
log-probability), reported normalised: 1 = the clean run, 0 = the corrupted run, averaged over
pairs before normalising.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Prompt, Result, Strict
from schemas.datasets import IoiDataset
from schemas.facts import Facts, index_errors
from schemas.sizes import Indices

Component = Literal["residual", "attn_out", "mlp_out", "attn_head", "head_query", "head_key", "head_value"]
HEAD_COMPONENTS = ("attn_head", "head_query", "head_key", "head_value")
Answer = Annotated[str, Field(min_length=1, max_length=256, description="one token of the model's vocabulary")]


class PatchPair(Strict):
    clean_prompt: Prompt
    corrupted_prompt: Prompt = Field(description="must tokenize to as many tokens as clean_prompt")
    answer: Answer = Field(description="the clean run's answer, e.g. ' Mary' (leading space included)")
    wrong_answer: Answer | None = Field(None, description="the corrupted run's answer; needed by logit_diff")


class ActivationPatchingInput(JobInput):
    """One pair (`clean_prompt`, `corrupted_prompt`, `answer`, `wrong_answer`), `pairs`, or a generated
    `dataset`."""

    clean_prompt: Prompt | None = None
    corrupted_prompt: Prompt | None = None
    answer: Answer | None = None
    wrong_answer: Answer | None = None
    pairs: Annotated[list[PatchPair], Field(min_length=1, max_length=64)] | None = None
    dataset: IoiDataset | None = Field(None, description="generated pairs (prompts of one template for position "
                                       "components: `templates` BABA or ABBA still mixes 15 templates of several "
                                       "lengths, so use head components or your own pairs)")

    @model_validator(mode="after")
    def _one_form(self) -> ActivationPatchingInput:
        single = (self.clean_prompt, self.corrupted_prompt, self.answer, self.wrong_answer)
        forms = (any(v is not None for v in single), self.pairs is not None, self.dataset is not None)
        if sum(forms) != 1:
            raise ValueError("give one pair's fields, `pairs`, or `dataset`")
        if forms[0] and None in single[:3]:
            raise ValueError("give `clean_prompt`, `corrupted_prompt` and `answer` (and `wrong_answer`)")
        return self

    def all_pairs(self) -> list[PatchPair]:
        """The pairs given inline (a `dataset` is generated on the worker, with the model's tokenizer)."""
        if self.pairs is not None:
            return self.pairs
        return [PatchPair(clean_prompt=self.clean_prompt, corrupted_prompt=self.corrupted_prompt,  # type: ignore[arg-type]
                          answer=self.answer, wrong_answer=self.wrong_answer)]  # type: ignore[arg-type]


class ActivationPatchingParams(JobParams):
    component: Component = Field(
        "residual", description="residual (the stream entering a layer), attn_out, mlp_out: layer × position; "
        "attn_head (a head's output before the output projection), head_query/head_key/head_value: layer × head")
    method: Literal["exact", "attribution"] = Field(
        "exact", description="exact: one patched run per component (batched); attribution: the first-order "
        "estimate (a_source − a_base)·∂metric/∂a from 2 forwards and 1 backward")
    direction: Literal["denoise", "noise"] = Field(
        "denoise", description="denoise: clean activations into the corrupted run; noise: corrupted into clean")
    metric: Literal["logit_diff", "logprob"] = "logit_diff"
    ablation: Literal["resample", "zero", "mean"] = Field(
        "resample", description="what a patched component takes: the other prompt's activation (resample), zero, "
        "or its mean over every pair's other prompt (mean; with direction 'noise' this is mean ablation)")
    layers: Indices | None = Field(None, description="layer indices (negative from the end); absent: all")
    heads: Indices | None = Field(None, description="head components: query heads (KV heads for head_key and "
                                  "head_value); absent: all")
    positions: Indices | None = Field(None, description="position components: positions (negative from the end); "
                                      "absent: all")
    per_position: bool = Field(False, description="head components: one patch per head and position")
    verify_top_k: Annotated[int, Field(ge=0, le=256)] = Field(
        0, description="attribution: re-run the k largest estimates exactly and report both")

    @model_validator(mode="after")
    def _consistent(self) -> ActivationPatchingParams:
        if self.per_position and self.component not in HEAD_COMPONENTS:
            raise ValueError("per_position applies to head components; position components are always per position")
        if self.verify_top_k and self.method != "attribution":
            raise ValueError("verify_top_k applies to method 'attribution'")
        return self

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        """Layers against the model; heads against its query heads (KV heads for keys and values)."""
        heads = "n_kv_heads" if self.component in ("head_key", "head_value") else "n_heads"
        checks = [(self.layers, "layers", "n_layers")]
        if self.component in HEAD_COMPONENTS:
            checks.append((self.heads, "heads", heads))
        return index_errors(facts, *checks)

    def axes(self) -> list[str]:
        if self.component not in HEAD_COMPONENTS:
            return ["layer", "position"]
        head = "kv_head" if self.component in ("head_key", "head_value") else "head"
        return ["layer", head, "position"] if self.per_position else ["layer", head]


class PatchCheck(Strict):
    index: list[int] = Field(description="the component's index along `axes`")
    estimate: float = Field(description="attribution patching's normalised estimate")
    exact: float = Field(description="the normalised effect of the real patch")


class ActivationPatchingResult(Result):
    clean_tokens: list[str] = Field(description="the first pair's clean prompt")
    corrupted_tokens: list[str] = Field(description="the first pair's corrupted prompt")
    n_pairs: int
    metric: Literal["logit_diff", "logprob"]
    clean_metric: float = Field(description="the metric on the clean prompts (mean over pairs)")
    corrupted_metric: float = Field(description="the metric on the corrupted prompts (mean over pairs)")
    axes: list[str] = Field(description="names of the axes of `effects`, outermost first")
    layers: list[int]
    heads: list[int] | None = Field(None, description="the index along a head axis (query or KV heads)")
    positions: list[int] | None = None
    effects: list[list[float]] | list[list[list[float]]] = Field(
        description="normalised effect per component: (patched − corrupted) / (clean − corrupted)")
    checks: list[PatchCheck] | None = Field(None, description="verify_top_k: estimate and exact effect")
    correlation: float | None = Field(None, description="Pearson r of `checks` (null with fewer than 3 or no "
                                      "spread)")
    forwards: int = Field(description="model forwards run (backwards counted as forwards)")
    positions_computed: int = Field(description="token positions × layers actually computed")
    positions_naive: int = Field(description="token positions × layers of one full forward per patch")


class ActivationPatchingJob(JobBase):
    kind: Literal["activation_patching"]
    input: ActivationPatchingInput
    params: ActivationPatchingParams = Field(default_factory=ActivationPatchingParams)
