"""Score many perturbed prompts fast: whole target per forward, many per forward, shared prefix.

`MaskScorer(keep)` maps keep masks over the free units, (M, U_free) bool, to the target metric
of every target token under teacher forcing, (M, T). Three things make it cheap:

1. One forward scores the whole target (logits only at the T target positions, `logits_to_keep`),
   where Captum's `LLMAttribution` decodes the target token by token (T forwards per perturbation,
   with full-vocabulary logits at every position).
2. Many perturbations share a forward: batches are sized by token positions
   (`workers.internals.batching.batch_tokens`, no gradients), so they fit memory on any device.
3. A perturbation leaves the prompt untouched before its first replaced position p, so its keys
   and values there are the clean ones. The clean sequence runs once with a KV cache; masks are
   sorted by p, and each batch runs only positions [p_min, L) with the clean cache cropped to
   p_min and expanded (a view, no copy) to the batch. Occlusion of token i then costs about
   L − i positions instead of L: about half the work.

Where batches close is planned (`plan_batches`) for the least total cost under the model
cost(forward) = overhead + rows × (L − p_min) (`workers.internals.batching.forward_overhead`): on a CPU a
forward's fixed cost is ~30 positions, so batches follow p closely; on a GPU it dominates, so
batches fill the memory budget and recompute some clean prefix, which is nearly free there.

Identical masks (KernelSHAP draws repeats; the empty and full coalitions recur) are scored once.
`share_prefix=False` runs the plain computation (full sequences, no cache), which the tests
compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from workers.internals.batching import batch_tokens, forward_overhead
from workers.internals.scoring import METRICS, Target, target_metric
from workers.models.loading import LM
from workers.perturbation.units import Units
from workers.progress import Progress, no_progress


@dataclass
class Stats:
    """Work done, for the result: masks asked, distinct masks run, forwards, positions run."""

    masks: int = 0
    distinct: int = 0
    forwards: int = 0
    positions_run: int = 0
    positions_plain: int = 0  # what full sequences would have cost


def plan_batches(suffix: np.ndarray, budget: int, overhead: int) -> list[tuple[int, int]]:
    """Split rows into consecutive batches [i, j) of least total cost.

    suffix: (M,) positions each row must run, non-increasing (rows sorted by first changed
    position). A batch runs every row over its first row's suffix: cost overhead + (j − i)·suffix[i],
    with (j − i)·suffix[i] ≤ budget (one row always fits). Exact dynamic programme from the end."""
    M = len(suffix)
    best = np.zeros(M + 1)  # best[i]: least cost of rows i..M-1
    cut = np.zeros(M, dtype=np.int64)
    for i in range(M - 1, -1, -1):
        rows = max(1, min(M - i, budget // max(1, int(suffix[i]))))
        j = np.arange(i + 1, i + rows + 1)  # candidate ends
        cost = overhead + (j - i) * float(suffix[i]) + best[j]
        k = int(cost.argmin())
        best[i], cut[i] = cost[k], j[k]
    plan, i = [], 0
    while i < M:
        plan.append((i, int(cut[i])))
        i = int(cut[i])
    return plan


class MaskScorer:
    """f(keep masks) -> (M, T) target metric; `f_input` (T,) and `logprob_input` (T,) at the clean input."""

    def __init__(self, lm: LM, target: Target, units: Units, replacement: torch.Tensor,
                 metric: str = "logprob", share_prefix: bool = True):
        if metric not in METRICS:
            raise ValueError(f"unknown target metric {metric!r}")
        self.lm, self.units, self.metric, self.share_prefix = lm, units, metric, share_prefix
        self.T = target.T
        self.L = target.n + target.T - 1
        self.target = torch.tensor(target.target_ids, device=lm.device)  # (T,)
        self.x = lm.embed(torch.tensor(target.seq_ids, device=lm.device)).detach()  # (L, d)
        self.base = replacement.to(self.x.dtype)  # (d,)
        self.budget = batch_tokens(lm, with_grad=False)
        self.overhead = forward_overhead(lm)
        self.stats = Stats()
        with torch.no_grad():
            out = lm.model(inputs_embeds=self.x[None], use_cache=share_prefix, logits_to_keep=self.T)
        self.f_input, self.logprob_input = (v[0] for v in self._metric(out.logits))  # (T,) each
        # clean keys/values per layer, each (1, kv_heads, L, head_dim)
        self.kv = [(layer.keys, layer.values) for layer in out.cache.layers] if share_prefix else None

    def _metric(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return target_metric(logits, self.target, self.metric)  # (B, T) each

    def _cache(self, p: int, batch: int) -> DynamicCache:
        """The clean cache cropped to p positions and expanded to `batch` rows (views, no copies)."""
        cache = DynamicCache(config=self.lm.config)
        for layer, (k, v) in zip(cache.layers, self.kv):
            layer.lazy_initialization(k, v)
            layer.keys = k[:, :, :p].expand(batch, -1, -1, -1)  # (B, kv_heads, p, head_dim)
            layer.values = v[:, :, :p].expand(batch, -1, -1, -1)
        return cache

    @torch.no_grad()
    def __call__(self, keep: torch.Tensor, progress: Progress = no_progress) -> torch.Tensor:
        """(M, U_free) bool keep masks -> (M, T) metric (float32, on the model's device)."""
        keep = keep.to(torch.bool).cpu()
        uniq, inverse = torch.unique(keep, dim=0, return_inverse=True)  # (D, U_free), (M,)
        replaced = self.units.positions(uniq, self.L)  # (D, L)
        any_rep = replaced.any(1)
        first = torch.where(any_rep, replaced.int().argmax(1), torch.full_like(any_rep, self.L, dtype=torch.long))
        out = torch.empty(uniq.shape[0], self.T, device=self.lm.device)  # (D, T)
        out[~any_rep] = self.f_input
        todo = torch.nonzero(any_rep).flatten()
        todo = todo[torch.argsort(first[todo], stable=True)]  # by first replaced position
        self.stats.masks += keep.shape[0]
        self.stats.distinct += len(todo)
        self.stats.positions_plain += len(todo) * self.L
        starts = first[todo] if self.share_prefix else torch.zeros(len(todo), dtype=torch.long)
        for a, b in plan_batches((self.L - starts).numpy(), self.budget, self.overhead):
            idx, p = todo[a:b], int(starts[a])
            rep = replaced[idx, p:].to(self.lm.device)  # (B, L-p)
            emb = torch.where(rep[..., None], self.base, self.x[p:])  # (B, L-p, d)
            kwargs = {"cache": self._cache(p, len(idx)), "use_cache": True} if p > 0 else {"use_cache": False}
            logits = self.lm.model(inputs_embeds=emb, logits_to_keep=self.T, **kwargs).logits
            out[idx.to(out.device)] = self._metric(logits)[0]
            self.stats.forwards += 1
            self.stats.positions_run += len(idx) * (self.L - p)
            progress(b / len(todo))
        return out[inverse.to(out.device)]
