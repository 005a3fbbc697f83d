"""`attention`: attention weights and the norms of weighted vectors (Kobayashi et al. 2020, "Attention
is Not Only a Weight: Analyzing Transformers with Vector Norms").

- weights: α_hij per layer, query head h, query i, key j;
- norms: ‖α_hij f_h(x_j)‖ with f_h(x_j) = (x_j W_V + b_V) W_O^h (b_O excluded), per query head; under
  grouped-query attention the value comes from the shared KV head h // (n_heads // n_kv_heads);
- summed_norms: ‖Σ_h α_hij f_h(x_j)‖ per layer, over all heads whatever `heads` selects;
- aggregate "token_class": per layer and head, the share of attention that goes to special tokens,
  punctuation and other tokens, by weight and by norm, averaged over queries (the paper's §4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from schemas.common import FieldError, JobBase, JobParams, Result, Strict, TextInput
from schemas.facts import Facts, index_errors
from schemas.limits import Limits
from schemas.sizes import ENVELOPE_BYTES, TOKEN_BYTES, Indices, count, first, square_bytes, too_large

Measure = Literal["weights", "norms", "summed_norms"]
MEASURES: tuple[Measure, ...] = ("weights", "norms", "summed_norms")
TokenClass = Literal["special", "punctuation", "other"]


class AttentionInput(TextInput):
    pass


class AttentionParams(JobParams):
    measures: Annotated[list[Measure], Field(min_length=1, max_length=3)] = list(MEASURES)
    layers: Indices | None = Field(None, description="layer indices (negative from the end); absent: all")
    heads: Indices | None = Field(None, description="query heads for weights and norms; absent: all")
    aggregate: Literal["none", "token_class"] = Field(
        "none", description="token_class: per layer and head, shares of attention by token class instead of the maps")

    @field_validator("measures")
    @classmethod
    def _unique(cls, v: list[Measure]) -> list[Measure]:
        return [m for m in MEASURES if m in v]

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), (self.heads, "heads", "n_heads"))

    def estimate_bytes(self, n_tokens: int, n_layers: int, n_heads: int, causal: bool,
                       layers: int | None = None, heads: int | None = None) -> int:
        """JSON size of the result for this selection (or `layers`/`heads` counts in its place)."""
        layers = count(self.layers, n_layers) if layers is None else layers
        heads = count(self.heads, n_heads) if heads is None else heads
        fixed = ENVELOPE_BYTES + n_tokens * 2 * TOKEN_BYTES
        if self.aggregate == "token_class":
            return fixed + layers * (n_heads + 1) * 200
        per_head = sum(m in self.measures for m in ("weights", "norms"))
        per_layer = square_bytes(n_tokens, causal) * (heads * per_head + ("summed_norms" in self.measures))
        return fixed + layers * per_layer

    def over_result_limit(self, n_tokens: int, facts: dict[str, Any], limits: Limits) -> Iterator[FieldError]:
        n_layers, n_heads, causal = facts["n_layers"], facts["n_heads"], facts.get("task") == "causal_lm"
        size = self.estimate_bytes(n_tokens, n_layers, n_heads, causal)
        limit = limits.max_result_bytes
        if size <= limit:
            return
        n_sel = count(self.layers, n_layers)
        fit_layers = max(k for k in range(n_sel + 1)
                         if k == 0 or self.estimate_bytes(n_tokens, n_layers, n_heads, causal, layers=k) <= limit)
        if fit_layers:
            fits: dict[str, Any] = {"layers": first(self.layers, n_layers, fit_layers)}
            hint = f"it fits with layers={fits['layers']} ({fit_layers} of {n_sel})"
            loc: list[str | int] = ["params", "layers"]
        else:
            n_h = count(self.heads, n_heads)
            fit_heads = max(k for k in range(n_h + 1) if k == 0 or self.estimate_bytes(
                n_tokens, n_layers, n_heads, causal, layers=1, heads=k) <= limit)
            if fit_heads and self.measures != ["summed_norms"]:
                fits = {"layers": first(self.layers, n_layers, 1), "heads": first(self.heads, n_heads, fit_heads)}
                hint = f"it fits with layers={fits['layers']} and heads={fits['heads']}"
                loc = ["params", "heads"]
            else:
                n_fit = max((n for n in range(1, n_tokens) if self.estimate_bytes(
                    n, n_layers, n_heads, causal, layers=1, heads=1) <= limit), default=1)
                fits = {"max_prompt_tokens": n_fit}
                hint = f"even one layer and head is too large: shorten the prompt to {n_fit} tokens"
                loc = ["input"]
        fits["aggregate"] = "token_class"
        yield too_large(size, limit, loc, fits, hint + ", or use aggregate='token_class'")


class AttentionLayer(Strict):
    layer: int
    weights: list[list[list[float]]] | None = Field(None, description="[head][query][key], rows sum to 1")
    norms: list[list[list[float]]] | None = Field(None, description="[head][query][key]: ‖α f_h(x_key)‖")
    summed_norms: list[list[float]] | None = Field(None, description="[query][key]: ‖Σ_h α f_h(x_key)‖")


class ClassShares(Strict):
    special: float
    punctuation: float
    other: float


class HeadTokenClass(Strict):
    head: int
    weight: ClassShares = Field(description="mean over queries of Σ_{key in class} α")
    norm: ClassShares = Field(description="mean over queries of Σ_{key in class} ‖α f‖ / Σ_key ‖α f‖")


class LayerTokenClass(Strict):
    layer: int
    heads: list[HeadTokenClass]
    weight: ClassShares = Field(description="the heads' weight shares, averaged over heads")
    summed_norm: ClassShares = Field(description="shares of ‖Σ_h α f‖ (all heads), mean over queries")


class AttentionResult(Result):
    tokens: list[str]
    token_classes: list[TokenClass]
    heads: list[int] = Field(description="the query heads along every [head] axis")
    kv_heads: list[int] = Field(description="the KV head each of `heads` reads (grouped-query attention)")
    layers: list[AttentionLayer] = Field(description="empty with aggregate 'token_class'")
    token_class: list[LayerTokenClass] | None = None


class AttentionJob(JobBase):
    kind: Literal["attention"]
    input: AttentionInput
    params: AttentionParams = Field(default_factory=AttentionParams)
