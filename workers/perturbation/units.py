"""Units of a perturbation (prompt tokens or words) and the replacement that removes one.

A unit is a span of prompt positions. Units made only of special tokens (BOS, chat markers) are
*fixed* when `fix_special_tokens` (the default): they are never removed and score 0, as for the
gradient methods, because a prompt without its BOS is off the model's training distribution.
Only the free units are perturbed; `keep` masks are over free units (True = present, False =
replaced by the baseline).

Removing a unit replaces the input embedding of each of its tokens with the replacement vector:
the embedding of the `pad` token (default) or the `mask` token, or the zero vector (`zero`).
Replacing the embedding of a token id by the embedding of another id is exactly what Captum's
`TextTokenInput(baselines=id)` does to the ids, so the numbers agree (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.errors import BadInput
from workers.internals.inputs import word_spans
from workers.internals.scoring import Target
from workers.models.loading import LM


@dataclass
class Units:
    spans: list[tuple[int, int]]  # [start, end) prompt positions of every unit, in order
    free: list[int]  # indices (into spans) of the units that may be removed
    tokens: list[str]  # display string of every unit

    @property
    def n(self) -> int:
        return len(self.spans)

    @property
    def n_free(self) -> int:
        return len(self.free)

    def positions(self, keep: torch.Tensor, length: int) -> torch.Tensor:
        """(M, U_free) keep masks -> (M, length) bool: True where the position is replaced."""
        replaced = torch.zeros(keep.shape[0], length, dtype=torch.bool, device=keep.device)
        for col, u in enumerate(self.free):
            a, b = self.spans[u]
            replaced[:, a:b] |= ~keep[:, col : col + 1]
        return replaced

    def full(self, free_scores: torch.Tensor) -> torch.Tensor:
        """(T, U_free) scores -> (T, U) with 0 at fixed units."""
        out = torch.zeros(free_scores.shape[0], self.n, dtype=free_scores.dtype, device=free_scores.device)
        out[:, self.free] = free_scores
        return out


def make_units(lm: LM, target: Target, granularity: str, fix_special_tokens: bool) -> Units:
    prompt = target.prompt
    toks = lm.token_strings(prompt.ids)
    spans = word_spans(prompt) if granularity == "word" else [(i, i + 1) for i in range(target.n)]
    free = [u for u, (a, b) in enumerate(spans) if not (fix_special_tokens and all(prompt.special[a:b]))]
    if not free:
        raise BadInput("the prompt has no tokens to perturb (all are special tokens)")
    return Units(spans=spans, free=free, tokens=["".join(toks[a:b]) for a, b in spans])


def replacement(lm: LM, baseline: str) -> tuple[torch.Tensor, str]:
    """The embedding (d,) that replaces a removed token, and a description of it for results."""
    emb = lm.embed
    if baseline == "zero":
        return torch.zeros(emb.weight.shape[1], device=lm.device, dtype=emb.weight.dtype), "zero embedding"
    tok = lm.tokenizer.pad_token_id if baseline == "pad" else lm.tokenizer.mask_token_id
    if tok is None:
        raise BadInput(f"model {lm.id} has no {baseline} token; use baseline 'zero' or 'pad'")
    vec = emb(torch.tensor(tok, device=lm.device)).detach()  # (d,)
    return vec, f"{baseline} token {lm.tokenizer.convert_ids_to_tokens(tok)!r} (id {tok})"
