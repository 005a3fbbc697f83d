"""`icl_anchors`: label words as anchors of in-context learning (Wang et al. 2023, EMNLP).

Input: labelled `demonstrations`, `label_words` {label: word} and a `template` that writes one
demonstration ("Review: {text}\\nSentiment: {label}\\n"); the query (`query`, or `queries` for the
batch analyses) is written with the same template, its label slot left for the model to fill. Or a
ready `prompt` whose demonstrations' label words are marked `[[word]]` (its last token is the target).

Analyses (`params.analyses`, default: all the input allows):
- `flows`: per layer, the saliency I_l = |Σ_h A_{h,l} ⊙ ∂L/∂A_{h,l}| and its mean over three sets of
  pairs: S_wp (text → label words), S_pq (label words → target), S_ww (all other pairs);
- `auc`: over the queries, the target's attention on each label word per layer as a predictor of the
  model's answer (AUC-ROC per layer) and R_l, the cumulative share Σ_{i≤l}(AUC_i − ½) / Σ_i(AUC_i − ½);
- `reweighting`: anchor re-weighting, one β per (layer, head, label) learnt on `fit_examples`
  (the target's attention on that label's words × exp(β)), accuracy before and after on `queries`;
  the β are stored as an `anchors` artifact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import FieldError, JobBase, JobInput, JobParams, Result, Strict
from schemas.facts import Facts
from schemas.limits import Limits, limited, over

DEFAULT_TEMPLATE = "Review: {text}\nSentiment: {label}\n"
MAX_DEMONSTRATIONS = 256
MAX_QUERIES = 2048
MAX_LABELS = 16

Text = Annotated[str, Field(min_length=1, max_length=4096)]
Label = Annotated[str, Field(min_length=1, max_length=64)]
Analysis = Literal["flows", "auc", "reweighting"]


class LabeledText(Strict):
    text: Text
    label: Label


class Query(Strict):
    text: Text
    label: Label | None = Field(None, description="the gold label: accuracy, and the loss of `flows` (params.loss)")


class IclAnchorsInput(JobInput):
    label_words: Annotated[dict[Label, Annotated[str, Field(min_length=1, max_length=64)]],
                           Field(min_length=2, max_length=MAX_LABELS)] = Field(
        description="label -> the word the demonstrations write for it (e.g. {\"positive\": \"positive\"}); "
                    "the words' first tokens must differ: the answer is read from them")
    demonstrations: Annotated[list[LabeledText], Field(min_length=1, max_length=MAX_DEMONSTRATIONS)] | None = None
    template: Annotated[str, Field(min_length=9, max_length=1024)] = Field(
        DEFAULT_TEMPLATE, description="one demonstration, with `{text}` before `{label}`; demonstrations are "
                                      "concatenated as written, the query is cut at `{label}`")
    instruction: Annotated[str, Field(max_length=4096)] | None = Field(None, description="text before the demonstrations")
    query: Query | None = None
    queries: Annotated[list[Query], Field(min_length=1, max_length=MAX_QUERIES,
                                          json_schema_extra=limited("max_samples"))] | None = None
    fit_examples: Annotated[list[LabeledText], Field(min_length=1, max_length=MAX_DEMONSTRATIONS,
                                                     json_schema_extra=limited("max_samples"))] | None = Field(
        None, description="extra labelled examples (the paper: 4 per class) on which anchor re-weighting learns β")
    prompt: Annotated[str, Field(min_length=1, max_length=32_768)] | None = Field(
        None, description="a ready prompt instead of demonstrations: label words marked [[word]], the target is "
                          "its last token")
    prompt_label: Label | None = Field(None, description="the gold label of the ready prompt's answer")

    @model_validator(mode="after")
    def _consistent(self) -> IclAnchorsInput:
        if (self.prompt is None) == (self.demonstrations is None):
            raise ValueError("give exactly one of `demonstrations` (with `template`) or a marked `prompt`")
        if self.prompt is not None:
            if self.query is not None or self.queries is not None or self.fit_examples is not None:
                raise ValueError("a marked `prompt` is one query: `query`, `queries` and `fit_examples` need "
                                 "`demonstrations`")
            if "[[" not in self.prompt:
                raise ValueError("`prompt` marks no label word: write them [[word]]")
            if self.prompt_label is not None and self.prompt_label not in self.label_words:
                raise ValueError(f"`prompt_label` {self.prompt_label!r} is not a key of `label_words`")
            return self
        if self.prompt_label is not None:
            raise ValueError("`prompt_label` goes with a marked `prompt`; give queries their `label`")
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` or `queries`")
        t = self.template
        if t.count("{text}") != 1 or t.count("{label}") != 1 or t.index("{text}") > t.index("{label}"):
            raise ValueError("`template` must hold `{text}` once, then `{label}` once")
        if not t[:t.index("{label}")].strip():
            raise ValueError("`template` needs text before `{label}`")
        for name, items in (("demonstrations", self.demonstrations), ("queries", self.all_queries),
                            ("fit_examples", self.fit_examples or [])):
            for i, item in enumerate(items or []):
                if item.label is not None and item.label not in self.label_words:
                    raise ValueError(f"{name}[{i}].label {item.label!r} is not a key of `label_words`")
        if self.fit_examples is not None and any(q.label is None for q in self.all_queries):
            raise ValueError("re-weighting reports accuracy on the queries: with `fit_examples` every query "
                             "needs its `label`")
        return self

    @property
    def all_queries(self) -> list[Query]:
        return self.queries if self.queries is not None else [self.query] if self.query is not None else []

    def over_limits(self, limits: Limits) -> Iterator[FieldError]:
        if self.queries is not None and len(self.queries) > limits.max_samples:
            yield over(["input", "queries"], len(self.queries), "max_samples", limits.max_samples)
        if self.fit_examples is not None and len(self.fit_examples) > limits.max_samples:
            yield over(["input", "fit_examples"], len(self.fit_examples), "max_samples", limits.max_samples)


class IclAnchorsParams(JobParams):
    analyses: Annotated[list[Analysis], Field(min_length=1, max_length=3)] | None = Field(
        None, description="default: `flows`; `auc` with 2+ queries; `reweighting` with `fit_examples`")
    flow_queries: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="flows are averaged over the first this many queries (one forward + backward each)")
    loss: Literal["gold", "prediction"] = Field(
        "gold", description="L of the saliency: cross-entropy over the label words' logits at the target "
                            "against the gold label (the model's prediction where a query has none), or "
                            "against the model's prediction")
    epochs: Annotated[int, Field(ge=1, le=200)] = Field(10, description="re-weighting: passes over `fit_examples`")
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = Field(0.1, description="re-weighting: Adam learning rate (reference: 0.1)")
    batch_size: Annotated[int, Field(ge=1, le=64)] = Field(1, description="re-weighting: examples per Adam step (reference: 1)")
    renormalize: bool = Field(False, description="re-weighting: renormalise the target's attention row after "
                                                 "scaling (the paper and its code do not)")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    compare_more_demos: bool = Field(
        True, description="re-weighting: also the accuracy with `fit_examples` added as demonstrations (the "
                          "paper's vanilla ICL with as many examples)")

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        if not isinstance(input, IclAnchorsInput):
            return
        wanted = set(self.analyses or [])
        n_queries = len(input.all_queries) if input.prompt is None else 1
        if "auc" in wanted and n_queries < 2:
            yield FieldError(loc=["params", "analyses"], type="invalid_input",
                             msg="`auc` is over a batch of queries: give 2 or more `queries`")
        if "reweighting" in wanted and input.fit_examples is None:
            yield FieldError(loc=["params", "analyses"], type="invalid_input",
                             msg="`reweighting` learns on `fit_examples`: give them")
        if input.fit_examples is not None and "reweighting" in (self.analyses or ["reweighting"]):
            steps = self.epochs * -(-len(input.fit_examples) // self.batch_size)
            if steps > Limits().max_steps:
                yield over(["params", "epochs"], steps, "max_steps", Limits().max_steps)


class Flows(Strict):
    s_wp: list[float] = Field(description="[layer] mean saliency of text → label-word pairs")
    s_pq: list[float] = Field(description="[layer] mean saliency of label word → target pairs")
    s_ww: list[float] = Field(description="[layer] mean saliency of all other pairs (j < i)")
    n_queries: int
    loss: str


class Prediction(Strict):
    predicted: str
    gold: str | None
    probs: dict[str, float] = Field(description="softmax over the label words' first-token logits at the target")


class Auc(Strict):
    auc: list[float] = Field(description="[layer] AUC-ROC of the target's attention on the label words (summed "
                                         "over heads) as a predictor of the model's answer")
    r: list[float] | None = Field(description="[layer] R_l = Σ_{i≤l}(AUC_i − 0.5) / Σ_i(AUC_i − 0.5); null when "
                                              "Σ_i(AUC_i − 0.5) is 0")
    n_queries: int
    classes_predicted: int
    counts: dict[str, int] = Field(description="the model's answers per label over the queries: an AUC over few "
                                               "answers of one label is noisy")


class Reweighting(Strict):
    anchors_id: str = Field(description="the stored β (`anchors` artifact)")
    accuracy_before: float
    accuracy_after: float
    accuracy_more_demos: float | None = Field(None, description="with `fit_examples` as extra demonstrations "
                                                                "(params.compare_more_demos)")
    loss_before: float = Field(description="mean cross-entropy on the queries, vanilla")
    loss_after: float
    fit_loss: list[float] = Field(description="[epoch] mean training cross-entropy")
    beta: list[list[list[float]]] = Field(description="[layer][head][label] the learnt β")
    predictions_after: list[Prediction]
    n_fit: int


class IclAnchorsResult(Result):
    labels: list[str]
    label_tokens: list[str] = Field(description="the token each label's answer is read from")
    n_layers: int
    n_heads: int
    tokens: list[str] = Field(description="the first query's prompt, as tokens")
    label_positions: list[int] = Field(description="label-word positions in that prompt")
    target_position: int
    flows: Flows | None = None
    predictions: list[Prediction]
    accuracy: float | None = Field(None, description="over the queries with a gold label; null when none has one")
    auc: Auc | None = Field(None, description="null when not asked for, or when the model predicts one class only "
                                              "(see warnings)")
    reweighting: Reweighting | None = None


class AnchorsRef(Strict):
    """Apply stored anchors (`icl_anchors` re-weighting) to a later job: wherever its prompt is written
    with the same template, the target's attention on each label word × exp(scale · β)."""

    anchors_id: Annotated[str, Field(pattern=r"^an_[0-9a-f]{32}$")]
    scale: Annotated[float, Field(ge=-100.0, le=100.0)] = Field(1.0, description="β × scale (0: the plain model)")


class IclAnchorsJob(JobBase):
    kind: Literal["icl_anchors"]
    input: IclAnchorsInput
    params: IclAnchorsParams = Field(default_factory=IclAnchorsParams)
