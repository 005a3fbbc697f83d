"""`circuit`: the indirect-object identification study of Wang et al. 2022 ("Interpretability in the
Wild") as one job: behaviour, path patching stage by stage (name movers, S-inhibition, induction
and duplicate-token, previous-token heads), the evidence that classed each head, faithfulness of
the found circuit under an ablation, knock-outs per class, backup name movers, and a graph.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import JobBase, JobInput, JobParams, Result, Strict
from schemas.datasets import IoiDataset, IoiPair

Role = Literal["name_mover", "negative_name_mover", "s_inhibition", "induction", "duplicate_token",
               "previous_token", "backup_name_mover"]


class CircuitInput(JobInput):
    dataset: IoiDataset | None = Field(None, description="generate the prompts (reproducible from the seed)")
    pairs: Annotated[list[IoiPair], Field(min_length=2, max_length=512)] | None = Field(
        None, description="your own labelled pairs, with the IO, S1, S2 and END positions of the clean prompt")

    @model_validator(mode="after")
    def _one(self) -> CircuitInput:
        if (self.dataset is None) == (self.pairs is None):
            raise ValueError("give exactly one of `dataset` or `pairs`")
        return self


class CircuitParams(JobParams):
    task: Literal["ioi"] = "ioi"
    ablation: Literal["mean", "zero", "resample"] = Field(
        "mean", description="what an ablated head outputs in faithfulness and knock-outs: its mean over the "
        "corrupted prompts of the same template, zero, or its output on the pair's own corrupted prompt")
    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.04, description="a head joins a class when its path-patching effect is at least this fraction of the "
        "clean − corrupted logit difference")
    max_heads_per_class: Annotated[int, Field(ge=1, le=32)] = 6


class HeadEvidence(Strict):
    id: str = Field(description="'L<layer>H<head>'")
    layer: int
    head: int
    role: Role
    path_effect: float = Field(description="normalised change of the logit difference when this head's corrupted "
                               "output is patched along the stage's paths (negative: the head carries IO)")
    attention: dict[str, float] = Field(description="mean attention probability: end_to_io, end_to_s2, s2_to_s1, "
                                        "s2_to_s1_plus_1, s1_plus_1_to_s1")
    copy_score: float | None = Field(None, description="name movers: share of prompts whose IO is in the top 5 "
                                     "tokens of the head's OV output at the IO position")


class Behaviour(Strict):
    logit_diff: float = Field(description="mean logit(IO) − logit(S) at END on the clean prompts")
    io_above_s: float = Field(description="share of clean prompts with IO above S")
    io_prob: float = Field(description="mean probability of IO")
    corrupted_logit_diff: float


class Faithfulness(Strict):
    """The circuit C is the heads that carry the answer: name movers, S-inhibition, induction,
    duplicate-token and previous-token heads. Negative name movers push against it; they are
    reported as a second figure."""

    ablation: str
    model: float = Field(description="F(M): mean logit difference of the whole model")
    circuit: float = Field(description="F(C): with every head outside the circuit ablated")
    empty: float = Field(description="F(∅): with every head ablated")
    ratio: float = Field(description="F(C) / F(M)")
    with_negative: float = Field(description="F(C ∪ negative name movers) / F(M)")
    n_heads: int = Field(description="heads in C")
    share_of_heads: float


class Knockout(Strict):
    role: str
    heads: list[str]
    logit_diff: float
    drop: float = Field(description="1 − logit_diff / F(M)")


class GraphNode(Strict):
    id: str
    layer: int | None = None
    head: int | None = None
    role: str


class GraphEdge(Strict):
    source: str
    target: str
    via: Literal["logits", "q", "k", "v", "kv"]
    effect: float


class Graph(Strict):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class CircuitResult(Result):
    pairs: list[IoiPair]
    behaviour: Behaviour
    direct_effects: list[list[float]] = Field(description="[layer][head]: path patching to the logits at END")
    heads: list[HeadEvidence] = Field(description="the circuit's heads with the evidence that classed them")
    backup_heads: list[HeadEvidence]
    faithfulness: Faithfulness
    knockouts: list[Knockout]
    graph: Graph
    forwards: int
    positions_computed: int
    positions_naive: int


class CircuitJob(JobBase):
    kind: Literal["circuit"]
    input: CircuitInput
    params: CircuitParams = Field(default_factory=CircuitParams)
