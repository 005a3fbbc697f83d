"""Result-size estimates, so a job whose result would be over `max_result_bytes` is refused before it
runs (at submit where the API knows the model's facts, and again on the worker), with the selection
that would fit. Both sides call the same estimate; `workers.tasks` still measures the real result.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from schemas.common import FieldError

# JSON bytes of one float32 value from `tensor.tolist()` (the double's repr and ", "): ~20 for
# values near 1, ~23 for small probabilities; masked (causal) zeros are "0.0, ".
FLOAT_BYTES = 24
ZERO_BYTES = 5
ENVELOPE_BYTES = 4096  # provenance, field names, brackets
TOKEN_BYTES = 24  # one token string in a list

# A selection of layers, heads or positions: indices, negative from the end; absent: all.
Indices = Annotated[list[Annotated[int, Field(ge=-100_000, lt=100_000)]], Field(min_length=1, max_length=4096)]


def square_bytes(n: int, causal: bool) -> int:
    """An n × n [query][key] map; a causal one has n(n-1)/2 zeros above the diagonal."""
    if causal:
        return n * (n + 1) // 2 * FLOAT_BYTES + n * (n - 1) // 2 * ZERO_BYTES
    return n * n * FLOAT_BYTES


def count(selected: list[int] | None, size: int) -> int:
    """How many indices a selection holds once resolved (out-of-range ones are refused elsewhere)."""
    return size if selected is None else len({i % size for i in selected if -size <= i < size})


def first(selected: list[int] | None, size: int, k: int) -> list[int]:
    """The first k indices of a selection, resolved and sorted as the worker resolves them."""
    picked = range(size) if selected is None else sorted({i % size for i in selected if -size <= i < size})
    return list(picked)[:k]


def too_large(estimated: int, limit: int, loc: list[str | int], fits: dict[str, Any], hint: str) -> FieldError:
    """The FieldError for a result estimated over `max_result_bytes`; ctx.fits is a selection that fits."""
    return FieldError(
        loc=loc,
        msg=f"the result would be about {estimated / 1e6:.1f} MB, over max_result_bytes={limit}; {hint}",
        type="result_too_large",
        ctx={"limit": "max_result_bytes", "limit_value": limit, "estimated_bytes": estimated, "fits": fits},
    )
