"""Words to tokens: a sentence given as words is encoded as the words joined by single spaces, with the
tokenizer's special tokens (BOS, [CLS]/[SEP]), and every token is assigned to the word its first
non-space character falls in (byte-level BPE tokens carry their leading space). Special tokens and
whitespace-only tokens belong to no word."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.errors import BadInput
from workers.models.loading import LM


@dataclass
class Aligned:
    ids: list[int]  # (n_tokens,) the model's input, special tokens included
    word_of: list[int | None]  # (n_tokens,) word index of each token; None: special or whitespace


def align(lm: LM, words: list[str], loc: list[str | int]) -> Aligned:
    if not getattr(lm.tokenizer, "is_fast", False):
        raise BadInput("syntactic_attention needs a fast tokenizer (character offsets)")
    text = " ".join(words)
    owner: list[int | None] = []  # character -> word
    for w, word in enumerate(words):
        owner.extend([w] * len(word))
        owner.append(None)
    enc = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True,
                       return_special_tokens_mask=True)
    word_of: list[int | None] = []
    for (start, end), special in zip(enc["offset_mapping"], enc["special_tokens_mask"]):
        chars = [owner[c] for c in range(start, min(end, len(text))) if not special and owner[c] is not None]
        word_of.append(chars[0] if chars else None)
    missing = sorted(set(range(len(words))) - {w for w in word_of if w is not None})
    if missing:
        raise BadInput(f"word {missing[0] + 1} ({words[missing[0]]!r}) has no token of its own in this tokenizer",
                       [])
    return Aligned(ids=list(enc["input_ids"]), word_of=word_of)


def membership(word_of: list[int | None], n_words: int) -> torch.Tensor:
    """(n_words, n_tokens) one-hot: row w marks the tokens of word w."""
    m = torch.zeros(n_words, len(word_of), dtype=torch.float64)
    for t, w in enumerate(word_of):
        if w is not None:
            m[w, t] = 1.0
    return m
