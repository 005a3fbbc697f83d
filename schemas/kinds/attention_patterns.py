"""`attention_patterns`: each head's attention map classified as vertical, diagonal,
vertical+diagonal, block or heterogeneous (the five classes of Kovaleva et al. 2019, "Revealing the
Dark Secrets of BERT"), by fixed features and thresholds instead of the paper's trained classifier.
The features and thresholds are documented in docs/internals.md and returned with the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.common import FieldError, JobBase, JobInput, JobParams, Prompt, Result, Strict
from schemas.facts import Facts, index_errors
from schemas.sizes import Indices

Pattern = Literal["vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous"]
PATTERNS: tuple[Pattern, ...] = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")


class AttentionPatternsInput(JobInput):
    prompts: Annotated[list[Prompt], Field(min_length=1, max_length=64)]


class AttentionPatternsParams(JobParams):
    layers: Indices | None = None
    heads: Indices | None = None

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), (self.heads, "heads", "n_heads"))


class PatternFeatures(Strict):
    """Each feature as excess over the same model's uniform map, (x − x_uniform) / (1 − x_uniform):
    0 means no more than uniform attention, 1 all of it. Means over prompts."""

    vertical: float = Field(description="mass on the few most-attended key columns")
    diagonal: float = Field(description="mass on keys at offset −1, 0, +1 from the query")
    union: float = Field(description="mass on either")
    block: float | None = Field(None, description="mass inside the query's own segment; None: under two segments")


class HeadPattern(Strict):
    layer: int
    head: int
    pattern: Pattern = Field(description="the most frequent class over the prompts")
    votes: dict[str, int] = Field(description="class -> number of prompts")
    features: PatternFeatures


class AttentionPatternsResult(Result):
    n_prompts: int
    layers: list[int]
    heads: list[int]
    grid: list[list[Pattern]] = Field(description="[layer][head] class, along `layers` and `heads`")
    patterns: list[HeadPattern]
    distribution: dict[str, float] = Field(description="class -> share of all (prompt, layer, head) maps")
    thresholds: dict[str, float]


class AttentionPatternsJob(JobBase):
    kind: Literal["attention_patterns"]
    input: AttentionPatternsInput
    params: AttentionPatternsParams = Field(default_factory=AttentionPatternsParams)
