"""Prompt token counting at submit time, with the model's own tokenizer.

Workers publish their tokenizer (the `tokenizers` JSON and the chat template) in Redis; the API
loads it with the light `tokenizers` library and renders chat templates with a sandboxed Jinja2,
so an over-long prompt is a 422 at submit, not a failed job later. Until a worker for the model
has started, the check is left to the worker (which always checks again). Once loaded, a model's
tokenizer is checked against the published digest every `REFRESH_S` by a background thread, so a
count reads no Redis on the submit path (which may run on the event loop: service/submission.py).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

from jinja2.sandbox import ImmutableSandboxedEnvironment
from redis import Redis
from tokenizers import Tokenizer

from schemas.common import MAX_PROMPT_CHARS, FieldError, TextInput
from schemas.keys import tokenizer_digest_key, tokenizer_key
from schemas.limits import Limits, over
from service.refresh import Refresher

REFRESH_S = 30.0
# A chat is refused before tokenizing once its rendering is longer than a prompt may be: 64 turns
# of up to MAX_PROMPT_CHARS each render to ~2 MB, seconds of tokenizer time for a certain 422.
MAX_RENDERED_CHARS = MAX_PROMPT_CHARS


@dataclass
class _Loaded:
    digest: bytes
    tokenizer: Tokenizer
    chat_template: str | None
    special: dict[str, str]
    checked_at: float


class TokenCounter:
    def __init__(self, connection: Redis):
        self.redis = connection
        self._cache: dict[str, _Loaded] = {}
        self._jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._last = threading.local()
        self._refresher = Refresher(self._load, "tokenizer")

    def cached(self, model: str) -> bool:
        """Whether `model`'s tokenizer is loaded, so counting reads no Redis here."""
        return model in self._cache

    def load(self, model: str) -> bool:
        """Load `model`'s published tokenizer now (start-up: service/main.py); False: none published."""
        return self._get(model) is not None

    def _get(self, model: str) -> _Loaded | None:
        """The loaded tokenizer; one older than `REFRESH_S` is checked again by a background thread
        (one at a time), so a caller never waits for Redis once a model's tokenizer is loaded."""
        cached = self._cache.get(model)
        if cached is None:
            return self._load(model)
        if time.monotonic() - cached.checked_at >= REFRESH_S:
            self._refresher.start(model)
        return cached

    def _load(self, model: str) -> _Loaded | None:
        """Read the published tokenizer's digest, and the tokenizer when it changed."""
        now = time.monotonic()
        digest = self.redis.get(tokenizer_digest_key(model))
        if digest is None:
            self._cache.pop(model, None)
            return None
        cached = self._cache.get(model)
        if cached and cached.digest == digest:
            cached.checked_at = now
            return cached
        raw = json.loads(self.redis.get(tokenizer_key(model)) or b"{}")
        if "tokenizer" not in raw:
            return None
        tokenizer = Tokenizer.from_str(raw["tokenizer"])
        tokenizer.no_padding()  # a tokenizer.json may pad and truncate (all-MiniLM-L6-v2's: to 128); a
        tokenizer.no_truncation()  # prompt counts as the tokens it has (workers encode it the same way)
        loaded = _Loaded(digest, tokenizer, raw.get("chat_template"), raw.get("special", {}), now)
        self._cache[model] = loaded
        return loaded

    def count(self, model: str, text: TextInput) -> int | None:
        """Tokens of `text` as the model's workers encode it; None: no tokenizer published yet. The
        last count of each thread is kept, so the checks of one request encode its prompt once."""
        last = getattr(self._last, "entry", None)
        if last is not None and last[0] == model and last[1] is text:  # held here: its id is not reused
            return last[2]
        n = self._count(model, text)
        self._last.entry = (model, text, n)
        return n

    def _render(self, loaded: _Loaded, text: TextInput) -> str | None:
        """The text the model reads: the prompt, or the chat rendered with its template (None: the
        model has no template). Rendering is cheap; tokenizing is what costs."""
        if text.prompt is not None:
            return text.prompt
        if not loaded.chat_template:
            return None
        return self._jinja.from_string(loaded.chat_template).render(
            messages=[m.model_dump() for m in text.messages or []], add_generation_prompt=True, **loaded.special)

    def rendered_chars(self, model: str, text: TextInput) -> int | None:
        loaded = self._get(model)
        if loaded is None:
            return None
        rendered = self._render(loaded, text)
        return None if rendered is None else len(rendered)

    def _count(self, model: str, text: TextInput) -> int | None:
        loaded = self._get(model)
        if loaded is None:
            return None
        rendered = self._render(loaded, text)
        if rendered is None or len(rendered) > MAX_RENDERED_CHARS:
            return None  # over the size cap: `check` refuses it without tokenizing
        return len(loaded.tokenizer.encode(rendered, add_special_tokens=text.prompt is not None).ids)

    def check(self, model: str, text: TextInput, limits: Limits, loc: list[str | int]) -> list[FieldError]:
        """The rendered size first (characters: no tokenizer call), then the tokens."""
        field = loc + (["prompt"] if text.prompt is not None else ["messages"])
        chars = self.rendered_chars(model, text)
        if chars is not None and chars > MAX_RENDERED_CHARS:
            return [over(field, chars, "max_prompt_chars", MAX_RENDERED_CHARS).model_copy(update={
                "msg": f"rendered with the model's chat template, the input is {chars} characters, over the "
                       f"limit max_prompt_chars={MAX_RENDERED_CHARS}"})]
        n = self.count(model, text)
        if n is not None and n > limits.max_prompt_tokens:
            return [over(field, n, "max_prompt_tokens", limits.max_prompt_tokens)]
        return []
