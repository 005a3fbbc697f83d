"""Token ids read back as the strings a result shows: the top tokens of a lens or of a vector's
projection onto the vocabulary (`logit_lens`, `ffn_projection`)."""

from __future__ import annotations

from workers.models.loading import LM


def token_texts(lm: LM, ids: list[list[int]]) -> list[list[str]]:
    """Decoded strings of nested token ids, each distinct id decoded once."""
    seen: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in seen:
            seen[i] = lm.tokenizer.decode([i])
        return seen[i]
    return [[text(i) for i in row] for row in ids]
