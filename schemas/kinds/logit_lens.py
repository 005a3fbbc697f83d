"""`logit_lens`: the residual stream after each layer read in the vocabulary (nostalgebraist 2020,
"interpreting GPT: the logit lens"): the final norm applied to that layer's states (its scale
recomputed per layer and position) and the unembedding. The last layer's lens is the model's own
next-token distribution. `include_mid` also reads the stream after each attention sublayer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from schemas.common import FieldError, JobBase, Result, Strict, TextInput
from schemas.facts import Facts, index_errors
from schemas.interventions import Interventions
from schemas.limits import Limits
from schemas.sizes import ENVELOPE_BYTES, FLOAT_BYTES, TOKEN_BYTES, Indices, count, first, too_large


class LogitLensInput(TextInput):
    target: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="a continuation; its first token's rank and probability are reported per layer")


class LogitLensParams(Interventions):
    positions: Indices | None = Field(None, description="positions to read (negative from the end); absent: all")
    layers: Indices | None = None
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    include_mid: bool = Field(False, description="also the stream after each attention sublayer (resid_mid)")

    def over_facts(self, facts: Facts, input: Any = None) -> Iterator[FieldError]:
        return index_errors(facts, (self.layers, "layers", "n_layers"), (self.positions, "positions", "n_tokens"))

    def estimate_bytes(self, n_tokens: int, n_layers: int, layers: int | None = None) -> int:
        layers = count(self.layers, n_layers) if layers is None else layers
        per_position = self.top_k * (TOKEN_BYTES + 8 + FLOAT_BYTES) + 2 * FLOAT_BYTES
        sites = 2 if self.include_mid else 1
        return ENVELOPE_BYTES + n_tokens * TOKEN_BYTES + layers * sites * count(self.positions, n_tokens) * per_position

    def over_result_limit(self, n_tokens: int, facts: dict[str, Any], limits: Limits) -> Iterator[FieldError]:
        n_layers, limit = facts["n_layers"], limits.max_result_bytes
        size = self.estimate_bytes(n_tokens, n_layers)
        if size <= limit:
            return
        fit = max(k for k in range(count(self.layers, n_layers) + 1)
                  if k == 0 or self.estimate_bytes(n_tokens, n_layers, layers=k) <= limit)
        fits = {"layers": first(self.layers, n_layers, max(fit, 1)), "positions": [-1]}
        hint = (f"it fits with layers={fits['layers']}" if fit else "it fits with positions=[-1]")
        yield too_large(size, limit, ["params", "layers" if fit else "positions"], fits, hint + " or a smaller top_k")


class LensLayer(Strict):
    layer: int
    site: Literal["resid_mid", "resid_post"] = Field(description="after the attention sublayer, or after the block")
    top_tokens: list[list[str]] = Field(description="[position][k], most probable first")
    top_ids: list[list[int]]
    top_probs: list[list[float]]
    target_rank: list[int] | None = Field(None, description="[position]: 0 when the target is the top token")
    target_prob: list[float] | None = None


class LogitLensResult(Result):
    tokens: list[str]
    positions: list[int]
    target_token: str | None = None
    target_id: int | None = None
    unembedding: Literal["lm_head", "input_embeddings"]
    layers: list[LensLayer] = Field(description="by layer, resid_mid before resid_post")

    def scalars(self) -> dict[str, float]:
        """For a sweep across checkpoints: the target's probability and rank at the last read position
        of the last layer read (the model's own next-token distribution when that is the last layer)."""
        last = next((lay for lay in reversed(self.layers) if lay.site == "resid_post"), None)
        if last is None or last.target_prob is None or last.target_rank is None or not last.target_prob:
            return {}
        return {"target_prob": last.target_prob[-1], "target_rank": float(last.target_rank[-1])}


class LogitLensJob(JobBase):
    kind: Literal["logit_lens"]
    input: LogitLensInput
    params: LogitLensParams = Field(default_factory=LogitLensParams)
