"""service/tokens.py: a chat whose rendering is over the size cap is refused on its characters,
without a tokenizer call (tokenizing ~1 MB costs seconds of API time for a certain 422)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from schemas.common import TextInput
from schemas.limits import Limits
from service.tokens import MAX_RENDERED_CHARS, TokenCounter, _Loaded

TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


class SpyTokenizer:
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str, add_special_tokens: bool = True):
        self.calls += 1
        return SimpleNamespace(ids=text.split())


def _counter() -> tuple[TokenCounter, SpyTokenizer]:
    spy = SpyTokenizer()
    counter = TokenCounter(connection=None)  # type: ignore[arg-type]  # the cache answers: no Redis
    counter._cache["m"] = _Loaded(b"d", spy, TEMPLATE, {}, time.monotonic())  # type: ignore[arg-type]
    return counter, spy


def test_a_chat_over_the_rendered_size_is_refused_without_tokenizing():
    counter, spy = _counter()
    chat = TextInput(messages=[{"role": "user", "content": "word " * 6000} for _ in range(32)])  # ~1 MB
    errors = counter.check("m", chat, Limits(), ["body", "input"])
    assert [e.loc for e in errors] == [["body", "input", "messages"]]
    assert errors[0].ctx["limit"] == "max_prompt_chars" and errors[0].ctx["value"] > MAX_RENDERED_CHARS
    assert "max_prompt_chars" in errors[0].msg
    assert counter.count("m", chat) is None  # other checks asking for the count do not tokenize it either
    assert spy.calls == 0


def test_a_chat_within_the_size_is_counted_in_tokens():
    counter, spy = _counter()
    chat = TextInput(messages=[{"role": "user", "content": "word " * 1000}])
    errors = counter.check("m", chat, Limits(max_prompt_tokens=512), ["body", "input"])
    assert errors and errors[0].ctx["limit"] == "max_prompt_tokens" and spy.calls == 1
