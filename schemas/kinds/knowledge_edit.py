"""`knowledge_edit`: suppress, enhance, erase or update one fact through its knowledge neurons
(Dai et al. 2022, §5), stored as an edit set that later jobs apply by hooks (`edits: [id]`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, Prompt, Result, Strict
from schemas.facts import Facts, out_of_range
from schemas.kinds.knowledge_neurons import (
    MAX_CONTROL_PROMPTS,
    MAX_FACT_PROMPTS,
    Answer,
    FactInput,
    FilteredNeuron,
    LocateParams,
    Neuron,
)

Operation = Literal["suppress", "enhance", "erase", "update"]


class KnowledgeEditInput(FactInput):
    new_answer: Answer | None = Field(None, description="update: the answer that replaces `answer`")
    paraphrases: Annotated[list[Prompt], Field(max_length=MAX_FACT_PROMPTS)] = Field(
        default_factory=list, description="Held-out paraphrases (not used to locate): generalization")
    control_prompts: Annotated[list[Prompt], Field(max_length=MAX_CONTROL_PROMPTS)] = Field(
        default_factory=list, description="Unrelated facts: locality, and (params.filter_controls) the contrast "
                                          "set when the neurons are located inline")
    neurons: Annotated[list[Neuron], Field(min_length=1, max_length=256)] | None = Field(
        None, description="Neurons to edit (e.g. from `knowledge_neurons`); absent: located inline")

    def over_facts(self, facts: Facts) -> Iterator[FieldError]:
        for k, n in enumerate(self.neurons or []):
            for field, value, size, fact in (("layer", n.layer, facts.n_layers, "n_layers"),
                                             ("index", n.index, facts.intermediate_size, "intermediate_size")):
                err = out_of_range([value], size, ["input", "neurons", k, field], field, fact, negatives=False)
                if err is not None:
                    yield err


class KnowledgeEditParams(LocateParams):
    operation: Operation = "erase"
    lam: Annotated[float, Field(ge=0.0, le=1000.0)] | None = Field(
        None, alias="lambda", description="erase/update: multiple of the answer's unembedding row subtracted "
                                          "from (update: and of the new answer's added to) each value vector; "
                                          "default 0.5 (docs/knowledge.md)")
    factor: Annotated[float, Field(ge=0.0, le=100.0)] | None = Field(
        None, description="suppress/enhance: activation multiplier (default 0 for suppress, 2 for enhance)")
    locality_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.05, description="A control prompt counts as unchanged when its top-1 token is the same and that "
                          "token's probability moved by at most this much (absolute)")

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _fields_for_operation(self) -> KnowledgeEditParams:
        if self.operation in ("suppress", "enhance") and self.lam is not None:
            raise ValueError("lambda applies to erase and update; use factor for suppress/enhance")
        if self.operation in ("erase", "update") and self.factor is not None:
            raise ValueError("factor applies to suppress and enhance; use lambda for erase/update")
        return self

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        yield from super().over_facts(facts, input)
        if self.operation == "update" and input is not None and input.new_answer is None:
            yield FieldError(loc=["input", "new_answer"], msg="operation 'update' needs input.new_answer",
                             type="missing")


class PromptScore(Strict):
    prompt: str
    prob_before: float
    prob_after: float
    top1_before: str
    top1_after: str
    new_prob_before: float | None = None
    new_prob_after: float | None = None


class SetScore(Strict):
    """Scores on one prompt set; `score` is the share of successes (definitions in docs/knowledge.md)."""

    score: float | None
    prob_before: float
    prob_after: float
    new_prob_before: float | None = None
    new_prob_after: float | None = None
    prompts: list[PromptScore]


class KnowledgeEditResult(Result):
    edit_id: str
    operation: Operation
    neurons: list[Neuron]
    located: bool = Field(description="True when the neurons were located by this job")
    filtered_neurons: list[FilteredNeuron] | None = Field(
        None, description="Located inline with filter_controls: the candidates dropped as mattering for control prompts")
    filtered_count: int | None = None
    reliability: SetScore
    generalization: SetScore | None = None
    locality: SetScore | None = None


class KnowledgeEditJob(JobBase):
    kind: Literal["knowledge_edit"]
    input: KnowledgeEditInput
    params: KnowledgeEditParams = Field(default_factory=KnowledgeEditParams)
