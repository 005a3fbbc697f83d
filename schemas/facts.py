"""What a check knows about a request beyond its own fields: the model's facts, as its workers
publish them with their heartbeat (`LM.facts()` in workers/models/loading.py), and the prompt's
length in tokens once counted with the model's tokenizer.

Every kind's Input may define `over_facts(facts)` and its Params `over_facts(facts, input)`, each
yielding the `FieldError`s of indices and parameters the schema alone cannot bound: a layer past
the model's last, a position past the prompt's end, more folds than examples of a label.
`JobBase.over_facts` collects them. The API calls it at submit with what it knows (the facts once a
live worker has published them, the token count once it has the tokenizer); the worker calls it
again with its own model's facts before it runs the method. A check whose fact is unknown (None)
passes: the method, which resolves every index itself, stays the last line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.common import FieldError


class ModelShape(BaseModel):
    """A model's shape as its workers publish it (None: no live worker has said); the API's model
    view (service/routes/models.py) and the facts the checks read share it."""

    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None


class Facts(ModelShape):
    """A model's published facts (any of them may be unknown) and the request's prompt length."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    task: str | None = None
    has_mask_token: bool | None = None
    has_chat_template: bool | None = None
    n_tokens: int | None = None  # the prompt (`input.prompt` or rendered `messages`), as the model counts it

    @classmethod
    def of(cls, published: dict[str, Any] | None, n_tokens: int | None = None) -> Facts:
        """From a worker's published facts (None: no live worker, nothing known)."""
        return cls.model_validate({**(published or {}), "n_tokens": n_tokens})


def out_of_range(selected: Sequence[int] | None, size: int | None, loc: list[str | int], what: str,
                 fact: str | None = None, negatives: bool = True) -> FieldError | None:
    """Indices in `selected` outside [-size, size), `size` being the fact named `fact` ("n_layers",
    "n_tokens", ...; None: unnamed); negative indices count from the end, as in Python (`negatives`: whether the
    field takes them). None: all fit, or the size is unknown."""
    if selected is None or size is None:
        return None
    bad = [i for i in selected if not -size <= i < size]
    if not bad:
        return None
    shown = bad if len(bad) <= 8 else [*bad[:8], "..."]
    of = (f"the prompt has {size} tokens" if fact == "n_tokens" else f"the model has {fact}={size}" if fact
          else f"there are {size}")
    hint = (f"use 0..{size - 1}" + (f" or -{size}..-1" if negatives else "")) if size else "there are none"
    return FieldError(loc=loc, msg=f"{what} {shown} out of range: {of}; {hint}", type="out_of_range",
                      ctx={"fact": fact, "size": size, "out_of_range": bad[:8]})


def index_errors(facts: Facts, *checks: tuple[Sequence[int] | None, str, str],
                 negatives: bool = True) -> Iterator[FieldError]:
    """`(selection, params field, fact)` triples: `layers` against `n_layers`, `heads` against
    `n_heads`, `positions` against `n_tokens`."""
    for selected, field, fact in checks:
        err = out_of_range(selected, getattr(facts, fact), ["params", field], field, fact, negatives)
        if err is not None:
            yield err


def split_error(folds: int, holdout: float | None, labels: Sequence[Hashable],
                groups: Sequence[str | None] | None) -> FieldError | None:
    """Whether seeded, stratified, group-aware k-fold (or one holdout split) can split these examples;
    the worker's splitter (workers/methods/probe.py) asks the same question."""
    grouped = groups is not None and any(g is not None for g in groups)
    units = len({g if g is not None else f"\0{i}" for i, g in enumerate(groups or [])}) if grouped else len(labels)
    counts = Counter(labels)  # as the worker's classes: set semantics (True == 1)
    smallest = min(counts.values()) if counts else 0
    if holdout is not None:
        n_val = math.ceil(holdout * units)
        if n_val < 1 or units - n_val < 1 or (not grouped and (n_val < len(counts) or smallest < 2)):
            return FieldError(
                loc=["params", "holdout"], type="too_few_examples",
                msg=f"holdout={holdout} leaves an empty or one-class side for {len(labels)} examples "
                    f"({units} groups, the smallest label has {smallest})",
                ctx={"holdout": holdout, "examples": len(labels), "groups": units, "smallest_label": smallest})
        return None
    if smallest < folds or units < folds:
        return FieldError(
            loc=["params", "folds"], type="too_few_examples",
            msg=f"folds={folds} needs at least {folds} examples (groups) of every label; the smallest label has "
                f"{smallest}, and there are {units} groups: lower folds or give more examples",
            ctx={"folds": folds, "smallest_label": smallest, "groups": units})
    return None
