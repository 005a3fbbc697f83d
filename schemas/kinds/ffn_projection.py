"""`ffn_projection`: an FFN's output at one position as a sum of sub-updates m_i v_i, read in the
vocabulary (Geva et al. 2022, "Transformer Feed-Forward Layers Build Predictions by Promoting
Concepts in the Vocabulary Space").

m_i is the coefficient (the input of the FFN's output projection: act(gate)·up for LLaMA, the
activation for GPT-2 and BERT), v_i the value vector (row i of the output projection read as an
(in, out) matrix), score |m_i|·‖v_i‖. The top sub-updates by score are projected to the vocabulary
as sign(m_i)·v_i (the direction the sub-update writes), through the norm's scale and the unembedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.common import FieldError, JobBase, JobParams, Result, Strict, TextInput
from schemas.facts import Facts, index_errors
from schemas.limits import Limits
from schemas.sizes import ENVELOPE_BYTES, FLOAT_BYTES, TOKEN_BYTES, Indices, count, first, too_large


class FfnProjectionInput(TextInput):
    pass


class FfnProjectionParams(JobParams):
    position: Annotated[int, Field(ge=-100_000, lt=100_000)] = Field(-1, description="default: the last token")
    layers: Indices | None = None
    top_values: Annotated[int, Field(ge=1, le=1024)] = 10
    top_tokens: Annotated[int, Field(ge=1, le=100)] = 10
    include_coefficients: bool = Field(False, description="every m_i of each layer")
    include_value_vectors: bool = Field(False, description="v_i of the top sub-updates")

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), ([self.position], "position", "n_tokens"))

    def estimate_bytes(self, n_layers: int, ffn: int, hidden: int, layers: int | None = None) -> int:
        layers = count(self.layers, n_layers) if layers is None else layers
        token = TOKEN_BYTES + 8 + FLOAT_BYTES
        per_value = 4 * FLOAT_BYTES + self.top_tokens * token + self.include_value_vectors * hidden * FLOAT_BYTES
        per_layer = (self.top_values * per_value + 2 * self.top_tokens * (token + 2 * FLOAT_BYTES)
                     + self.include_coefficients * ffn * FLOAT_BYTES)
        return ENVELOPE_BYTES + layers * per_layer

    def over_result_limit(self, n_tokens: int, facts: dict[str, Any], limits: Limits) -> Iterator[FieldError]:
        n_layers, ffn, hidden = facts["n_layers"], facts["intermediate_size"], facts["hidden_size"]
        size, limit = self.estimate_bytes(n_layers, ffn, hidden), limits.max_result_bytes
        if size <= limit:
            return
        fit = max(k for k in range(count(self.layers, n_layers) + 1)
                  if k == 0 or self.estimate_bytes(n_layers, ffn, hidden, layers=k) <= limit)
        fits = {"layers": first(self.layers, n_layers, max(fit, 1))}
        yield too_large(size, limit, ["params", "layers"], fits,
                        f"it fits with layers={fits['layers']}" if fit else "lower top_values or drop value vectors")


class TokenLogit(Strict):
    token: str
    id: int
    logit: float


class SubUpdate(Strict):
    index: int = Field(description="i: the FFN unit")
    coefficient: float = Field(description="m_i")
    value_norm: float = Field(description="‖v_i‖")
    score: float = Field(description="|m_i|·‖v_i‖")
    top_tokens: list[TokenLogit] = Field(description="tokens sign(m_i)·v_i promotes most")
    value_vector: list[float] | None = None


class TokenShift(Strict):
    token: str
    id: int
    logprob_before: float
    logprob_after: float
    delta: float


class FfnLayer(Strict):
    layer: int
    update_norm: float = Field(description="‖Σ_i m_i v_i‖ (the output projection's bias excluded)")
    sub_updates: list[SubUpdate] = Field(description="the top `top_values` by score")
    promoted: list[TokenShift] = Field(description="largest rise of log p at the position from the FFN update")
    suppressed: list[TokenShift] = Field(description="largest fall")
    coefficients: list[float] | None = None


class FfnProjectionResult(Result):
    tokens: list[str]
    position: int
    token: str
    n_values: int = Field(description="FFN width: sub-updates per layer")
    projection: str = Field(description="how value vectors are read in the vocabulary on this model")
    layers: list[FfnLayer]


class FfnProjectionJob(JobBase):
    kind: Literal["ffn_projection"]
    input: FfnProjectionInput
    params: FfnProjectionParams = Field(default_factory=FfnProjectionParams)
