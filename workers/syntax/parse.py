"""Attention read as a dependency parse (Clark et al. 2019, §4.2, and their released analysis code).

Word-level attention from subword attention, as Clark et al. (§4.1 footnote, `attn_to_words`):
attention *to* a split word is the sum over its tokens, attention *from* a split word the mean over
its tokens: W = (M / |w|) α Mᵀ for the one-hot word membership M (words × tokens). Special tokens are
no word: their columns drop out, as Clark et al. drop [CLS]/[SEP] after the conversion.

Predicted parent of word i, per direction (Clark et al.'s `attn_head_predictor` modes):
- parent ("normal"): argmax_j W[i, j], the word i attends to most;
- child ("transpose"): argmax_j W[j, i], the word that attends most to i (a parent attending to its child);
- both: argmax_j W[i, j] + W[j, i].
Self-attention is excluded (the diagonal is zeroed). Where differing from their code: a word whose
candidates all score 0 (the first word of a causal model in the parent direction) gets no prediction
and counts as wrong, where `np.argmax` would silently pick word 1; roots (head 0) are not scored, where
their "all" counted them (argmax + 1 can never be 0, so a root always counted as wrong).
"""

from __future__ import annotations

import torch

from schemas.kinds.syntactic_attention import DIRECTIONS

OFFSETS = (-3, -2, -1, 1, 2, 3)  # Clark et al.'s fixed-offset baselines


def word_attention(alpha: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(H, n_tok, n_tok) token attention [query][key] -> (H, n_words, n_words) word attention [from][to]:
    mean over the attending word's tokens, sum over the attended word's tokens."""
    m = members.to(alpha.device, torch.float64)  # (w, t)
    mean_from = m / m.sum(1, keepdim=True)  # (w, t)
    return torch.einsum("wt,hts,vs->hwv", mean_from, alpha.double(), m)


def predict(word_attn: torch.Tensor) -> dict[str, torch.Tensor]:
    """(H, w, w) word attention -> direction -> (H, w) predicted parent (0-based word index; -1: none)."""
    n = word_attn.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=word_attn.device)
    scores = {"parent": word_attn, "child": word_attn.transpose(-1, -2)}
    scores["both"] = scores["parent"] + scores["child"]
    out = {}
    for direction in DIRECTIONS:
        s = scores[direction].masked_fill(eye, 0.0)
        best, arg = s.max(-1)  # ties: the first (leftmost) word
        out[direction] = torch.where(best > 0, arg, torch.full_like(arg, -1))
    return out


def offset_predictions(n: int, offset: int) -> torch.Tensor:
    """(n,) every word's parent predicted at `offset` (-1 where that falls outside the sentence)."""
    i = torch.arange(n) + offset
    return torch.where((i >= 0) & (i < n), i, torch.full_like(i, -1))
