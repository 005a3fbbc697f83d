"""Turning a request's text into token ids, with the limits checked on the model's tokenizer."""

from __future__ import annotations

from schemas.common import FieldError, TextInput
from schemas.facts import out_of_range
from schemas.limits import Limits, over
from workers.errors import BadInput
from workers.models.loading import LM, Encoded


def encode_prompt(lm: LM, text: TextInput, limits: Limits,
                  loc: tuple[str | int, ...] = ("input", "prompt")) -> Encoded:
    """Encode `text`; over `max_prompt_tokens` (or empty after tokenization) is a BadInput."""
    field = list(loc) if text.prompt is not None else [loc[0], "messages"]
    if text.messages is not None and not getattr(lm.tokenizer, "chat_template", None):
        raise BadInput(f"model {lm.id} has no chat template; send `prompt`",
                       [FieldError(loc=field, msg="this model has no chat template", type="no_chat_template")])
    enc = lm.encode(text)
    if not enc.ids:
        raise BadInput(f"{'.'.join(map(str, field))} has no tokens", [FieldError(loc=field, msg="no tokens", type="empty")])
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


def encode_one_token(lm: LM, text: str, loc: list[str | int], why: str) -> int:
    """The id of `text` as a continuation that must be one token (an answer a logit difference
    compares); more is a BadInput at `loc` that lists the tokens and says `why` one is needed."""
    ids = encode_continuation(lm, text)
    if len(ids) != 1:
        msg = f"{text!r} is {len(ids)} tokens ({lm.token_strings(ids)}); {why}"
        raise BadInput(msg, [FieldError(loc=loc, msg=msg, type="not_one_token")])
    return ids[0]


def word_spans(enc: Encoded) -> list[tuple[int, int]]:
    """[start, end) token spans of words: runs of one pre-tokenizer word; special tokens alone."""
    spans: list[tuple[int, int]] = []
    for i, w in enumerate(enc.word_ids):
        if spans and w is not None and enc.word_ids[spans[-1][0]] == w:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


def resolve_indices(selected: list[int] | None, size: int, loc: list[str | int], what: str,
                    fact: str | None = None) -> list[int]:
    """Layer, head or position indices (negative counts from the end) -> sorted unique indices in
    [0, size), `size` being the fact `fact` (n_layers, n_heads, n_tokens); `selected` None selects
    all. Out of range is a BadInput naming the field."""
    if selected is None:
        return list(range(size))
    if (err := out_of_range(selected, size, loc, what, fact)) is not None:  # as the API checks at submit
        raise BadInput(err.msg, [err])
    return sorted({i % size for i in selected})


def encode_for_dissection(lm: LM, request, limits: Limits) -> tuple[Encoded, dict, list[int]]:
    """Encode the prompt, refuse a result over the size limit before any forward (a 422 naming a
    selection that fits), and resolve `params.layers`: the start shared by the dissection kinds."""
    enc = encode_prompt(lm, request.input, limits)
    facts = lm.facts()
    if errors := list(request.params.over_result_limit(len(enc.ids), facts, limits)):
        raise BadInput(errors[0].msg, errors)
    layers = resolve_indices(request.params.layers, facts["n_layers"], ["params", "layers"], "layers", "n_layers")
    return enc, facts, layers
