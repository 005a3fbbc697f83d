"""Exact activation patching, batched: every patch is a real forward, many patches per forward, and
work a patch cannot change is not redone.

A base run (the corrupted prompt when denoising) is run once with its KV cache and the residual
stream entering every layer kept. A patch at layer l and position p changes nothing before layer l
nor (causal models) before position p, so its row starts from the kept residual at layer l and
reuses the kept keys and values of positions < p (held once, broadcast to the batch's rows only
in the layers the batch runs: `PrefixLayer`). Patches are sorted by (layer, first position) and cut
into batches by an exact dynamic programme over a cost model: a batch of R rows starting at layer l0
and position p0 costs (L − l0 + 1)·overhead + (L − l0)·R·(T − p0) position-layers (a fixed cost per
layer run and one more per forward: embedding, mask, final norm, metric, Python), with R·(T − p0)
within the device's token budget (`workers.internals.batching`).

Starting mid-network hands the residual to the model as `inputs_embeds` over the later blocks only,
which is exact for families whose embedding output *is* the residual stream (LLaMA-like); others
start at layer 0 and still reuse the prefix cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from workers.internals.batching import forward_overhead, rows_per_batch
from workers.internals.decoding import CACHE_ARG
from workers.internals.hooks import capture_inputs, hooks
from workers.models.loading import LM
from workers.patching.sites import Site, site_hooks
from workers.progress import Progress, no_progress

SKIPS_LAYERS = frozenset({"llama"})  # model types whose blocks may be entered with the residual as inputs_embeds


@dataclass(frozen=True, order=True)
class Patch:
    layer: int
    position: int | None = None  # None: every position
    unit: int | None = None  # head; None: the whole vector

    @property
    def start(self) -> int:
        return 0 if self.position is None else self.position


@dataclass(frozen=True)
class Metric:
    """logit(answer) − logit(wrong) at the last position, or log p(answer) when `wrong` is None.

    Computed from the final (normed) hidden state: a logit difference needs two rows of the
    unembedding, not the whole vocabulary."""

    answer: int
    wrong: int | None = None

    def of_hidden(self, lm: LM, h: torch.Tensor) -> torch.Tensor:
        """(B, d) final hidden states at the last position -> (B,) fp32."""
        head = lm.module(lm.arch.unembed)
        if self.wrong is None:
            return torch.log_softmax(head(h).float(), -1)[:, self.answer]
        rows = head.weight[[self.answer, self.wrong]].float()  # (2, d)
        # a row-wise product and sum rather than a matrix product: the value of a row does not depend
        # on how many rows share the call (a GEMM picks its kernel, so its summation order, by shape)
        logits = (h.float()[:, None, :] * rows[None]).sum(-1)  # (B, 2)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[self.answer, self.wrong]].float()
        return logits[:, 0] - logits[:, 1]


@dataclass
class Counts:
    forwards: int = 0
    positions: int = 0  # token positions × layers computed
    naive: int = 0  # the same for one full forward per patch


@dataclass
class BaseRun:
    ids: list[int]
    metric: float
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, kv_heads, T, head_dim) each
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (T, d) entering it


def n_layers(lm: LM) -> int:
    return len(lm.layers)


def body(lm: LM) -> nn.Module:
    """The decoder without its LM head (LlamaModel, GPT2Model): its output is the final normed state."""
    return lm.module(lm.arch.layers.rpartition(".")[0])


def skips_layers(lm: LM) -> bool:
    return lm.config.model_type in SKIPS_LAYERS


@torch.no_grad()
def base_run(lm: LM, ids: list[int], metric: Metric, counts: Counts) -> BaseRun:
    """One forward keeping the KV cache and (where blocks can be entered mid-network) the residual
    entering every block and the final norm (resid[n_layers])."""
    L = n_layers(lm)
    sites = {**dict(enumerate(lm.layers)), L: lm.module(lm.arch.final_norm)} if skips_layers(lm) else {}
    with capture_inputs(sites) as resid:
        out = body(lm)(input_ids=torch.tensor([ids], device=lm.device), use_cache=True)
    cache = out[CACHE_ARG]
    counts.forwards += 1
    counts.positions += len(ids) * L
    counts.naive += len(ids) * L
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    value = float(metric.of_hidden(lm, out.last_hidden_state[:, -1])[0])
    return BaseRun(ids, value, kv, {i: t[0] for i, t in resid.items()})


@torch.no_grad()
def plain_metric(lm: LM, ids: list[int], metric: Metric, counts: Counts) -> float:
    """The metric of an unpatched run."""
    h = body(lm)(input_ids=torch.tensor([ids], device=lm.device), use_cache=False).last_hidden_state
    counts.forwards += 1
    counts.positions += len(ids) * n_layers(lm)
    counts.naive += len(ids) * n_layers(lm)
    return float(metric.of_hidden(lm, h[:, -1])[0])


@torch.no_grad()
def read_run(lm: LM, site: Site, ids: list[int], layers: list[int], metric: Metric | None,
             counts: Counts) -> tuple[dict[int, torch.Tensor], float | None]:
    """The component at `layers` (layer -> (T, units, width)) and the metric (None without one),
    from one forward of `ids`."""
    store: dict[int, torch.Tensor] = {}

    def keep(layer: int, a: torch.Tensor) -> None:
        store[layer] = a[0].detach().clone()

    forward, pre = site_hooks(lm, site, layers, keep)
    with hooks(forward=forward, pre=pre):
        h = body(lm)(input_ids=torch.tensor([ids], device=lm.device), use_cache=False).last_hidden_state
    counts.forwards += 1
    counts.positions += len(ids) * n_layers(lm)
    counts.naive += len(ids) * n_layers(lm)
    return store, None if metric is None else float(metric.of_hidden(lm, h[:, -1])[0])


def read_site(lm: LM, site: Site, ids: list[int], layers: list[int], counts: Counts) -> dict[int, torch.Tensor]:
    """The component at `layers` on one forward of `ids`: layer -> (T, units, width)."""
    return read_run(lm, site, ids, layers, None, counts)[0]


def plan(patches: list[Patch], T: int, L: int, overhead: int, budget: int) -> list[tuple[int, int]]:
    """Cut `patches` (sorted) into consecutive batches [i, j) of least total cost (module docstring).
    The per-forward term matters where rows run no layer at all (a change at the final norm's input,
    l0 = L): without it every such row would be planned as a forward of its own."""
    P = len(patches)
    best = [0.0] * (P + 1)
    cut = [P] * P
    for i in range(P - 1, -1, -1):
        l0, p0 = patches[i].layer, T
        best[i] = float("inf")
        for j in range(i + 1, P + 1):
            p0 = min(p0, patches[j - 1].start)
            rows = j - i
            if rows > 1 and rows * (T - p0) > budget:
                break
            cost = (L - l0 + 1) * overhead + (L - l0) * rows * (T - p0) + best[j]
            if cost < best[i]:
                best[i], cut[i] = cost, j
    out, i = [], 0
    while i < P:
        out.append((i, cut[i]))
        i = cut[i]
    return out


class PrefixLayer(DynamicLayer):
    """One layer's keys and values of the base run before p0, (1, kv_heads, p0, head_dim), shared by
    the `rows` rows of a batch: broadcast and joined to the rows' own keys and values only when the
    layer runs. (A DynamicCache filled with the prefix expanded to R rows copies it R times in every
    layer up front, layers the batch starts after included, and again when the layer runs.)"""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, rows: int):
        super().__init__()
        self.keys, self.values, self.rows = keys, values, rows
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.keys = torch.cat([self.keys.expand(self.rows, -1, -1, -1), key_states], dim=-2)
        self.values = torch.cat([self.values.expand(self.rows, -1, -1, -1), value_states], dim=-2)
        return self.keys, self.values


def prefix_cache(base: BaseRun, p0: int, rows: int) -> DynamicCache:
    """The base run's KV cache before position p0 for a batch of `rows` rows (`PrefixLayer`)."""
    cache = DynamicCache()
    cache.layers = [PrefixLayer(k[:, :, :p0], v[:, :, :p0], rows) for k, v in base.kv]
    return cache


@contextmanager
def from_layer(lm: LM, l0: int) -> Iterator[None]:
    """Run only blocks l0.. (the model is entered with the residual at l0 as `inputs_embeds`)."""
    owner_path, _, name = lm.arch.layers.rpartition(".")
    owner = lm.module(owner_path)
    blocks = getattr(owner, name)
    setattr(owner, name, nn.ModuleList(list(blocks)[l0:]))
    try:
        yield
    finally:
        setattr(owner, name, blocks)


def _patch_edit(batch: list[Patch], source: dict[int, torch.Tensor], p0: int, device: torch.device):
    """The edit that writes each row's patch: rows grouped by layer, one indexed copy per layer."""
    groups: dict[int, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}
    for layer in sorted({p.layer for p in batch}):
        rows = [r for r, p in enumerate(batch) if p.layer == layer]
        ps = [batch[r] for r in rows]
        pos = None if ps[0].position is None else torch.tensor([p.position for p in ps], device=device)
        units = None if ps[0].unit is None else torch.tensor([p.unit for p in ps], device=device)
        groups[layer] = (torch.tensor(rows, device=device), pos, units)

    def edit(layer: int, a: torch.Tensor) -> torch.Tensor | None:  # a: (B, T - p0, units, width)
        if layer not in groups:
            return None
        rows, pos, units = groups[layer]
        src = source[layer].to(a.dtype)  # (T, units, width)
        a = a.clone()
        if pos is not None and units is not None:
            a[rows, pos - p0, units] = src[pos, units]
        elif pos is not None:
            a[rows, pos - p0] = src[pos]
        elif units is not None:
            a[rows, :, units] = src[p0:, units].transpose(0, 1)  # (R, T - p0, width)
        else:
            a[rows] = src[p0:]
        return a
    return edit


Hooks = tuple[list, list]  # (forward hooks, pre-hooks) for workers.internals.hooks.hooks
MakeHooks = Callable[[list[int], int], Hooks]  # (row indices of one batch, its first position p0) -> hooks


@torch.no_grad()
def run_rows(lm: LM, base: BaseRun, spans: list[Patch], make_hooks: MakeHooks, metric: Metric, counts: Counts,
             progress: Progress = no_progress) -> torch.Tensor:
    """The metric of the base run once per row, each row changed by the hooks `make_hooks` gives its
    batch: (len(spans),) fp32, in row order. spans[r] says where row r's change begins (its layer
    and first position): the batch starts there, from the base run's residual and KV prefix."""
    T, L = len(base.ids), n_layers(lm)
    skips = skips_layers(lm)
    # where each row's forward starts: its layer where blocks can be entered mid-network, else layer 0
    starts = [Patch(min(s.layer, L) if skips else 0, s.start) for s in spans]
    order = sorted(range(len(spans)), key=lambda k: (starts[k].layer, starts[k].start))
    ordered = [starts[k] for k in order]
    budget = rows_per_batch(lm, 1, with_grad=False)  # token positions per forward
    out = torch.empty(len(spans))
    ids = torch.tensor(base.ids, device=lm.device)
    batches = plan(ordered, T, L, forward_overhead(lm), budget)
    for b, (i, j) in enumerate(batches):
        rows = order[i:j]
        R, p0, l0 = j - i, min(p.start for p in ordered[i:j]), ordered[i].layer
        kwargs: dict = {"use_cache": p0 > 0}
        if p0 > 0:
            kwargs[CACHE_ARG] = prefix_cache(base, p0, R)
        if l0 > 0:
            kwargs["inputs_embeds"] = base.resid[l0][p0:].expand(R, -1, -1)  # (R, T - p0, d)
        else:
            kwargs["input_ids"] = ids[p0:].expand(R, -1)  # (R, T - p0)
        forward, pre = make_hooks(rows, p0)
        with hooks(forward=forward, pre=pre), (from_layer(lm, l0) if l0 > 0 else nullcontext()):
            h = body(lm)(**kwargs).last_hidden_state[:, -1]  # (R, d)
        out[torch.tensor(rows)] = metric.of_hidden(lm, h).cpu()
        counts.forwards += 1
        counts.positions += R * (T - p0) * (L - l0)
        counts.naive += R * T * L
        progress((b + 1) / len(batches))
    return out


def patched_metrics(lm: LM, site: Site, patches: list[Patch], base: BaseRun, source: dict[int, torch.Tensor],
                    metric: Metric, counts: Counts, progress: Progress = no_progress) -> torch.Tensor:
    """The metric of the base run with each patch applied alone: (len(patches),) fp32, in order."""
    def make_hooks(rows: list[int], p0: int) -> Hooks:
        batch = [patches[r] for r in rows]
        return site_hooks(lm, site, sorted({p.layer for p in batch}), _patch_edit(batch, source, p0, lm.device))
    return run_rows(lm, base, patches, make_hooks, metric, counts, progress)
