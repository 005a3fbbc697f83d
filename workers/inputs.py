"""Turning a request's text into token ids, with the limits checked on the model's tokenizer."""

from __future__ import annotations

from schemas.common import TextInput
from schemas.limits import Limits, over
from workers.errors import BadInput
from workers.models.loading import LM, Encoded


def encode_prompt(lm: LM, text: TextInput, limits: Limits, loc: tuple[str, ...] = ("input", "prompt")) -> Encoded:
    """Encode `text`; over `max_prompt_tokens` (or empty after tokenization) is a BadInput."""
    enc = lm.encode(text)
    field = list(loc) if text.prompt is not None else [loc[0], "messages"]
    if not enc.ids:
        raise BadInput("the prompt has no tokens")
    if len(enc.ids) > limits.max_prompt_tokens:
        err = over(field, len(enc.ids), "max_prompt_tokens", limits.max_prompt_tokens)
        raise BadInput(err.msg, [err])
    return enc


def encode_continuation(lm: LM, text: str) -> list[int]:
    """Token ids of text that continues a prompt (no BOS, no special tokens added)."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise BadInput("the target has no tokens")
    return list(ids)


def word_spans(enc: Encoded) -> list[tuple[int, int]]:
    """[start, end) token spans of words: runs of one pre-tokenizer word; special tokens alone."""
    spans: list[tuple[int, int]] = []
    for i, w in enumerate(enc.word_ids):
        if spans and w is not None and enc.word_ids[spans[-1][0]] == w:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans
