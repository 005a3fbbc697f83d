"""Head ablation for faithfulness and knock-outs (Wang et al. 2022 §4; Miller et al. 2024 on how the
choice of ablation moves faithfulness): the chosen heads' outputs (before the output projection)
are replaced, at every position, by a given value, or by zero."""

from __future__ import annotations

import torch

from workers.models.loading import LM
from workers.patching.exact import Hooks
from workers.patching.sites import site_hooks, site_of


def ablation_hooks(lm: LM, heads: list[tuple[int, int]], value: dict[int, torch.Tensor] | None) -> Hooks:
    """Hooks that set each (layer, head) output to value[layer][:, head] ((T, H, head_dim) per layer;
    the last positions when a forward runs only a suffix), or zero when `value` is None."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def edit(layer: int, a: torch.Tensor) -> torch.Tensor | None:  # a: (B, T', H, head_dim)
        chosen = by_layer.get(layer)
        if chosen is None:
            return None
        a = a.clone()
        if value is None:
            a[:, :, chosen] = 0
        else:
            a[:, :, chosen] = value[layer][-a.shape[1]:, chosen].to(a.dtype)
        return a

    return site_hooks(lm, site_of(lm, "attn_head"), sorted(by_layer), edit)
