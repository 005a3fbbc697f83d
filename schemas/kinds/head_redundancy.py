"""`head_redundancy`: which attention heads do the same thing, and which can go.

- Redundancy (Bian et al. 2021, "On Attention Redundancy: A Comprehensive Study", NAACL): a
  head × head distance matrix over the texts, token-level (mean Jensen-Shannon or Hellinger distance
  between the two heads' attention rows) or sentence-level (1 − correlation of what the two heads
  write into the residual stream), the clusters of an average-linkage dendrogram cut at `threshold`,
  and a redundancy score per head (1 − its distance to its nearest other head).
- Importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): |∂L/∂ξ_h| at ξ = 1
  for a mask ξ_h scaling each head's output, averaged over texts, and the exact loss with the head
  masked (every masked variant a real forward, many per forward).
- A pruning proposal: the largest prefix of the heads in importance order whose joint masking keeps
  the loss within `tolerance`, measured by a real masked run.

The method, where it differs from the papers and what it found on the bundled models: docs/head_redundancy.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Prompt, Result, Strict
from schemas.facts import Facts, index_errors
from schemas.sizes import Indices

Distance = Literal["jensen_shannon", "hellinger", "output_correlation"]
Target = Annotated[str, Field(min_length=1, max_length=256, description="one token of the model's vocabulary")]
MAX_TEXTS = 128


class HeadRedundancyInput(JobInput):
    """`texts` (a few dozen sentences); with `targets`, one next token per text for a task metric."""

    texts: Annotated[list[Prompt], Field(min_length=2, max_length=MAX_TEXTS)]
    targets: Annotated[list[Target], Field(min_length=2, max_length=MAX_TEXTS)] | None = Field(
        None, description="the expected next token after each text (causal models): the loss becomes the "
        "target's cross-entropy and the task metric next-token accuracy")

    @model_validator(mode="after")
    def _aligned(self) -> HeadRedundancyInput:
        if self.targets is not None and len(self.targets) != len(self.texts):
            raise ValueError(f"`targets` must have one entry per text: {len(self.targets)} for {len(self.texts)}")
        return self

    def over_facts(self, facts: Facts) -> list[FieldError]:
        if self.targets is not None and facts.task == "encoder":
            return [FieldError(loc=["input", "targets"], type="not_supported",
                               msg="`targets` need a causal LM (a next token to predict); this model is an encoder")]
        return []


class HeadRedundancyParams(JobParams):
    distance: Distance = Field(
        "jensen_shannon", description="jensen_shannon / hellinger: token level, the mean distance between two heads' "
        "attention rows (queries that see at least two keys), averaged over texts, in [0, 1]; output_correlation: "
        "sentence level, 1 − Pearson r of the two heads' outputs written into the residual stream, in [0, 2]")
    threshold: Annotated[float, Field(gt=0.0, le=2.0)] = Field(
        0.2, description="average-linkage clusters are cut at this distance")
    layers: Indices | None = Field(None, description="the heads of these layers only (negative from the end); "
                                   "absent: all")
    importance: Annotated[list[Literal["gradient", "exact"]], Field(max_length=2)] | None = Field(
        None, description="gradient: |∂L/∂ξ_h| at ξ = 1 (Michel et al. 2019; causal models only); exact: the loss "
        "with the head masked, one real masked run per head (batched); absent: both on causal models, exact on "
        "encoders")
    prune: bool = Field(True, description="propose the largest set of heads whose joint masking stays within "
                        "`tolerance`, found in importance order and measured by a real masked run")
    prune_by: Literal["exact", "gradient"] = Field(
        "exact", description="the importance order the pruning search follows (least important first)")
    prune_on: Literal["loss", "accuracy"] = Field(
        "loss", description="loss: relative increase ≤ tolerance (encoders: the embedding drift ≤ tolerance, "
        "absolute); accuracy: relative drop of next-token accuracy ≤ tolerance (needs `targets`)")
    tolerance: Annotated[float, Field(ge=0.0, le=10.0)] = 0.01
    random_control: bool = Field(
        False, description="also build the distance matrix on random token sequences of the same lengths and "
        "report how far its structure agrees with the texts' (Bian et al.'s task-agnostic finding)")
    seed: Annotated[int, Field(ge=0, lt=2**63)] = Field(0, description="random_control: the seed of the random sequences")

    @model_validator(mode="after")
    def _consistent(self) -> HeadRedundancyParams:
        if self.prune and self.importance is not None and self.prune_by not in self.importance:
            raise ValueError(f"prune_by={self.prune_by!r} needs {self.prune_by!r} in `importance`")
        return self

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        yield from index_errors(facts, (self.layers, "layers", "n_layers"))
        if facts.task == "encoder" and "gradient" in (self.importance or ()):
            yield FieldError(loc=["params", "importance"], type="not_supported",
                             msg="gradient importance needs a loss with a slope at ξ = 1; an encoder's embedding "
                                 "drift has its minimum there (use ['exact'])")
        if self.prune_on == "accuracy" and (input is None or getattr(input, "targets", None) is None):
            yield FieldError(loc=["params", "prune_on"], type="missing",
                             msg="prune_on 'accuracy' needs `input.targets`")
        if facts.task == "encoder" and self.prune and self.prune_by == "gradient":
            yield FieldError(loc=["params", "prune_by"], type="not_supported",
                             msg="encoders have no gradient importance: prune_by 'exact'")

    def importances(self, task: str) -> list[str]:
        """The importances to compute on a model of `task`."""
        if self.importance is not None:
            return list(dict.fromkeys(self.importance))
        return ["gradient", "exact"] if task == "causal_lm" else ["exact"]


class HeadScore(Strict):
    layer: int
    head: int
    cluster: int = Field(description="index into `clusters`, or −1 when the head is in no cluster of two or more")
    nearest: list[int] = Field(description="[layer, head] of the nearest other head")
    nearest_distance: float
    redundancy: float = Field(description="1 − nearest_distance")
    gradient_importance: float | None = Field(None, description="mean over texts of |∂L/∂ξ_h| at ξ = 1 "
                                              "(absent when not computed)")
    masked_loss: float | None = Field(None, description="the loss with this head masked (absent when not computed)")
    loss_change: float | None = Field(None, description="masked_loss − base loss")
    masked_accuracy: float | None = Field(None, description="with `targets`: accuracy with this head masked")


class Pruning(Strict):
    order: Literal["exact", "gradient"]
    criterion: Literal["loss", "accuracy"]
    tolerance: float
    heads: list[list[int]] = Field(description="[layer, head] of the proposed set, in the order they were added")
    n_heads: int
    fraction: float = Field(description="n_heads over the heads considered")
    loss_before: float
    loss_after: float = Field(description="measured with every head of the set masked at once")
    relative_change: float = Field(description="(loss_after − loss_before) / loss_before (encoders: the absolute "
                                   "drift, loss_before being 0)")
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    next_loss: float | None = Field(None, description="the loss with the next head in the order masked too (the "
                                    "first prefix found over tolerance); absent when every head fits")
    evaluations: int = Field(description="jointly masked runs the search made")


class RandomControl(Strict):
    matrix_correlation: float = Field(description="Pearson r of the two distance matrices' off-diagonal entries")
    adjusted_rand: float = Field(description="adjusted Rand index of the two clusterings (1: identical)")
    n_clusters: int = Field(description="clusters of two or more heads on the random sequences")
    clustered_heads: int


class HeadRedundancyResult(Result):
    metric: Literal["lm_loss", "target_loss", "embedding_drift"] = Field(
        description="lm_loss: mean next-token cross-entropy over every token of the texts; target_loss: the "
        "targets' cross-entropy; embedding_drift (encoders): mean over texts of 1 − cos between the mean-pooled "
        "last hidden state with and without the mask")
    n_texts: int
    n_tokens: int
    base_loss: float
    base_accuracy: float | None = None
    distance: Distance
    threshold: float
    heads: list[list[int]] = Field(description="[layer, head] of each row and column of `matrix`")
    matrix: list[list[float]] = Field(description="head × head distances, symmetric, zero diagonal")
    clusters: list[list[list[int]]] = Field(description="clusters of two or more heads, largest first: [layer, head]")
    scores: list[HeadScore]
    pruning: Pruning | None = None
    random_control: RandomControl | None = None
    forwards: int = Field(description="model forwards run (a backward counted as one more)")
    masked_rows: int = Field(description="masked variants of a text computed (rows of the batched forwards)")


class HeadRedundancyJob(JobBase):
    kind: Literal["head_redundancy"]
    input: HeadRedundancyInput
    params: HeadRedundancyParams = Field(default_factory=HeadRedundancyParams)
