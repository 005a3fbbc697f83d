"""Where a patchable component lives in a block, and hooks that read or overwrite it.

A component is a slice of one module's input or output in every block: the residual stream
entering the block, the attention or MLP sublayer's output, a head's output before the output
projection (`attn_head`), or a head's query, key or value. Its activation is read as
(batch, seq, units, width): `units` heads of `width` features, or 1 unit for whole vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from workers.models.loading import LM

# fn(layer, activation (B, T, units, width)) -> a replacement of the same shape, or None to leave it
Edit = Callable[[int, torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Site:
    component: str
    path: str  # module relative to a block ("" = the block itself)
    reads_input: bool  # the module's first input (pre-hook) rather than its output
    units: int  # heads along the feature axis (1: the whole vector)
    width: int  # features per unit
    offset: int = 0  # first feature of the component in a fused projection (GPT-2 c_attn: q | k | v)


def site_of(lm: LM, component: str) -> Site:
    arch, heads, kv, dh = lm.arch, lm.n_heads, lm.n_kv_heads, lm.head_dim
    hidden = lm.embed.weight.shape[1]
    if component == "residual":
        return Site(component, "", True, 1, hidden)
    if component == "attn_out":
        return Site(component, arch.attn, False, 1, hidden)
    if component == "mlp_out":
        return Site(component, arch.mlp, False, 1, hidden)
    if component == "attn_head":
        return Site(component, arch.attn_out, True, heads, dh)
    fused = arch.qkv_fused
    if component == "head_query":
        return Site(component, arch.q_proj, False, heads, dh, 0)
    if component == "head_key":
        return Site(component, arch.k_proj, False, kv, dh, heads * dh if fused else 0)
    if component == "head_value":
        return Site(component, arch.v_proj, False, kv, dh, (heads + kv) * dh if fused else 0)
    raise ValueError(f"unknown component {component!r}")


def site_hooks(lm: LM, site: Site, layers: list[int], edit: Edit) -> tuple[list, list]:
    """(forward hooks, pre-hooks) for `workers.internals.hooks.hooks` that hand each layer's component to
    `edit` as (B, T, units, width) and write back what it returns. Fused projections are cloned
    before the component's slice is overwritten; nothing is changed in place."""
    lo, hi = site.offset, site.offset + site.units * site.width

    def apply(layer: int, full: torch.Tensor) -> torch.Tensor | None:
        part = full[..., lo:hi]
        new = edit(layer, part.unflatten(-1, (site.units, site.width)))
        if new is None:
            return None
        if lo == 0 and hi == full.shape[-1]:
            return new.flatten(-2)
        out = full.clone()
        out[..., lo:hi] = new.flatten(-2)
        return out

    def pre(layer: int):
        def fn(module: nn.Module, args: tuple):
            new = apply(layer, args[0])
            return None if new is None else (new, *args[1:])
        return fn

    def post(layer: int):
        def fn(module: nn.Module, args: tuple, output):
            tensor = output[0] if isinstance(output, tuple) else output
            new = apply(layer, tensor)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return fn

    modules = [(layer, lm.layers[layer].get_submodule(site.path)) for layer in layers]
    if site.reads_input:
        return [], [(m, pre(layer)) for layer, m in modules]
    return [(m, post(layer)) for layer, m in modules], []
