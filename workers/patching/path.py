"""Path patching (Wang et al. 2022 §3.1; Goldowsky-Dill et al. 2023): a sender head's patched output
reaches only chosen receivers; every other component reads the sender's base output.

A sender head h at layer s writes Δ = (z_source − z_base)[:, h] · W_O^h into the residual stream
(the output projection's bias cancels). Instead of writing Δ into the stream, each receiver gets
it added to its own input:

- `q`, `k`, `v` of given heads at layer r > s: the projection is recomputed from
  norm(x_r + Δ) for those heads' slices only (KV heads for k and v);
- `attn` at layer r > s: the attention norm's input, so q, k and v of every head;
- `mlp` at layer r ≥ s: the MLP norm's input;
- `logits`: the final norm's input.

A receiver's changed output then flows on normally, to every later component. So with every
receiver open (attn and mlp at every later layer, and the logits), each component's input is
exactly what it is under activation patching of the sender; with none it is the base run. Both
identities are tested. Receivers may be restricted to positions (the paper's queries at END).
Rows (one per sender) run through `exact.run_rows`: from the earliest receiver's layer and first
position, on the base run's residual and KV prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from workers.internals.capture import head_out_weights
from workers.models.loading import LM
from workers.patching.exact import BaseRun, Counts, Hooks, Metric, Patch, n_layers, run_rows
from workers.patching.sites import site_of
from workers.progress import Progress, no_progress

PROJECTION = {"q": "head_query", "k": "head_key", "v": "head_value"}


@dataclass(frozen=True)
class Receiver:
    site: str  # "q", "k", "v" (per head), "attn", "mlp" (whole sublayer input), "logits"
    layer: int  # n_layers for the logits
    heads: tuple[int, ...] = ()  # q: query heads; k, v: KV heads
    positions: tuple[int, ...] | None = None  # None: every position

    def sees(self, sender_layer: int) -> bool:
        return self.layer >= sender_layer if self.site in ("mlp", "logits") else self.layer > sender_layer


def everything(lm: LM) -> list[Receiver]:
    """Every path open: attention and MLP inputs of every layer, and the logits."""
    L = n_layers(lm)
    return [Receiver(s, r) for r in range(L) for s in ("attn", "mlp")] + [Receiver("logits", L)]


def _module(lm: LM, receiver: Receiver, path: str | None) -> nn.Module:
    return lm.module(path) if receiver.site == "logits" else lm.layers[receiver.layer].get_submodule(path)


def path_patched_metrics(lm: LM, senders: list[tuple[int, int]], receivers: list[Receiver], base: BaseRun,
                         z_base: dict[int, torch.Tensor], z_source: dict[int, torch.Tensor], metric: Metric,
                         counts: Counts, progress: Progress = no_progress) -> torch.Tensor:
    """The metric with each sender (layer, head) patched along its paths into `receivers` only:
    (len(senders),) fp32. z_base, z_source: layer -> (T, H, head_dim) head outputs (attn_head site)."""
    out = torch.full((len(senders),), base.metric)
    live = [k for k, (s, _) in enumerate(senders) if any(r.sees(s) for r in receivers)]
    if not live:
        return out
    spans = []
    for k in live:
        seen = [r for r in receivers if r.sees(senders[k][0])]
        first = min((0 if r.positions is None else min(r.positions)) for r in seen)
        spans.append(Patch(min(r.layer for r in seen), first))
    w_o = {s: head_out_weights(lm, s) for s in {senders[k][0] for k in live}}  # (H, head_dim, d)

    def make_hooks(rows: list[int], p0: int) -> Hooks:
        picked = [senders[live[r]] for r in rows]
        delta = torch.stack([(z_source[s][p0:, h] - z_base[s][p0:, h]).to(w_o[s].dtype) @ w_o[s][h]
                             for s, h in picked])  # (R, T - p0, d)
        return _receiver_hooks(lm, receivers, picked, delta, p0)

    out[torch.tensor(live)] = run_rows(lm, base, spans, make_hooks, metric, counts, progress)
    return out


def _receiver_hooks(lm: LM, receivers: list[Receiver], picked: list[tuple[int, int]], delta: torch.Tensor,
                    p0: int) -> Hooks:
    arch = lm.arch
    forward, pre = [], []
    block_inputs: dict[int, torch.Tensor] = {}

    def added(receiver: Receiver) -> torch.Tensor:  # (R, T - p0, d): Δ where this receiver sees it
        rows = torch.tensor([receiver.sees(s) for s, _ in picked], device=delta.device, dtype=delta.dtype)
        where = torch.ones(delta.shape[1], device=delta.device, dtype=delta.dtype)
        if receiver.positions is not None:
            where = torch.zeros_like(where)
            where[[p - p0 for p in receiver.positions]] = 1.0
        return delta * rows[:, None, None] * where[None, :, None]

    def add_to_input(extra: torch.Tensor):
        def fn(module: nn.Module, args: tuple):
            return (args[0] + extra.to(args[0].dtype), *args[1:])
        return fn

    def keep_block_input(layer: int):
        def fn(module: nn.Module, args: tuple) -> None:
            block_inputs[layer] = args[0]
        return fn

    def recompute_heads(receiver: Receiver, extra: torch.Tensor):
        site = site_of(lm, PROJECTION[receiver.site])
        norm = lm.layers[receiver.layer].get_submodule(arch.attn_norm)
        cols = torch.cat([torch.arange(site.offset + g * site.width, site.offset + (g + 1) * site.width)
                          for g in receiver.heads])

        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x = block_inputs[receiver.layer]
            changed = module.forward(norm.forward(x + extra.to(x.dtype)))  # .forward: no hooks re-entered
            output = output.clone()
            output[..., cols] = changed[..., cols]
            return output
        return fn

    for receiver in receivers:
        if not any(receiver.sees(s) for s, _ in picked):
            continue
        extra = added(receiver)
        if receiver.site in PROJECTION:
            pre.append((lm.layers[receiver.layer], keep_block_input(receiver.layer)))
            path = getattr(arch, f"{receiver.site}_proj")
            forward.append((_module(lm, receiver, path), recompute_heads(receiver, extra)))
        else:
            path = {"attn": arch.attn_norm, "mlp": arch.mlp_norm, "logits": arch.final_norm}[receiver.site]
            pre.append((_module(lm, receiver, path), add_to_input(extra)))
    return forward, pre
