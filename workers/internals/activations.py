"""Batched collection of per-example activations at three sites, with hooks that always come off.

Sites, per layer (paths from `workers/models/architectures.py`):
- `residual`: the block's output, the residual stream after layer l, (hidden,).
- `mlp`: the output of the FFN's output projection (`arch.mlp_out`), the FFN's write to the
  residual stream, (hidden,).
- `attn_head`: the input of the attention output projection (`arch.attn_out`) split per query
  head, (heads, head_dim): the "head output" ITI probes and steers (Li et al. 2023; the
  reference code reads `self_attn.o_proj`'s input with baukit's TraceDict).

Each example is reduced inside the hook to the activation at its last real token or to the mean
over its real tokens, so a batch never keeps (batch, seq, ...) tensors for every layer. Batches
are right-padded with an attention mask (causal models: padding after the last real token
cannot change it); examples are sorted by length, longest first, so batches carry little padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from workers.internals.batching import rows_per_batch
from workers.internals.hooks import hooks
from workers.models.loading import LM
from workers.progress import Progress, no_progress

Site = Literal["residual", "attn_head", "mlp"]
Position = Literal["last", "mean"]


def _reduce(x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, position: Position) -> torch.Tensor:
    """(batch, seq, D) -> (batch, D) float32: the last real token, or the mean over real tokens."""
    if position == "last":
        return x[torch.arange(x.shape[0], device=x.device), lengths - 1].float()
    m = mask[..., None].to(x.dtype)  # (batch, seq, 1)
    return ((x * m).sum(1) / lengths[:, None].to(x.dtype)).float()


@contextmanager
def _collectors(lm: LM, site: Site, layers: Sequence[int], position: Position,
                batch: dict[str, torch.Tensor]) -> Iterator[dict[int, torch.Tensor]]:
    """Hooks filling `out[layer]` with the reduced (batch, D) activation of the current forward.

    `batch` holds this forward's `mask` (batch, seq) and `lengths` (batch,), set before each call."""
    out: dict[int, torch.Tensor] = {}
    blocks = lm.layers

    def take(layer: int, x: Any) -> None:
        x = x[0] if isinstance(x, tuple) else x  # (batch, seq, D)
        out[layer] = _reduce(x.detach(), batch["mask"], batch["lengths"], position)

    def forward_hook(layer: int):
        return lambda module, args, output: take(layer, output)

    def pre_hook(layer: int):
        return lambda module, args: take(layer, args[0])

    if site == "residual":
        with hooks(forward=[(blocks[l], forward_hook(l)) for l in layers]):
            yield out
    elif site == "mlp":
        with hooks(forward=[(blocks[l].get_submodule(lm.arch.mlp_out), forward_hook(l)) for l in layers]):
            yield out
    else:
        with hooks(pre=[(blocks[l].get_submodule(lm.arch.attn_out), pre_hook(l)) for l in layers]):
            yield out


@torch.no_grad()
def collect(lm: LM, sequences: Sequence[Sequence[int]], site: Site, layers: Sequence[int] | None = None,
            position: Position = "last", progress: Progress = no_progress,
            progress_span: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Activations of every token-id sequence at `site`, on the CPU in float32.

    Returns (N, layers, hidden) for `residual` / `mlp` and (N, layers, heads, head_dim) for
    `attn_head`, rows in the order of `sequences`."""
    layers = list(range(len(lm.layers))) if layers is None else list(layers)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # longest first
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    causal = lm.spec.task == "causal_lm"
    rows: list[torch.Tensor | None] = [None] * len(sequences)
    batch: dict[str, torch.Tensor] = {}
    lo, hi = progress_span
    done = 0
    with _collectors(lm, site, layers, position, batch) as out:
        start = 0
        while start < len(order):
            size = rows_per_batch(lm, len(sequences[order[start]]), with_grad=False)  # the batch's longest
            idx = order[start : start + size]
            seq_len = max(len(sequences[i]) for i in idx)
            ids = torch.full((len(idx), seq_len), pad, dtype=torch.long)  # (batch, seq)
            mask = torch.zeros((len(idx), seq_len), dtype=torch.long)  # (batch, seq)
            for r, i in enumerate(idx):
                ids[r, : len(sequences[i])] = torch.tensor(list(sequences[i]))
                mask[r, : len(sequences[i])] = 1
            batch["mask"] = mask.to(lm.device)
            batch["lengths"] = mask.sum(1).to(lm.device)  # (batch,)
            kwargs = {"logits_to_keep": 1, "use_cache": False} if causal else {}
            lm.model(input_ids=ids.to(lm.device), attention_mask=batch["mask"], **kwargs)
            stacked = torch.stack([out[l] for l in layers], 1).cpu()  # (batch, layers, D)
            for r, i in enumerate(idx):
                rows[i] = stacked[r]
            out.clear()
            start += len(idx)
            done += len(idx)
            progress(lo + (hi - lo) * done / len(order))
    acts = torch.stack(rows)  # type: ignore[arg-type]  # (N, layers, D)
    if site == "attn_head":
        acts = acts.reshape(acts.shape[0], acts.shape[1], lm.n_heads, lm.head_dim)  # (N, layers, heads, head_dim)
    return acts
