"""The computations of Wang et al. 2023 on prompts with known label-word and target positions.

- `saliency` / `flow_means`: I_l = |Σ_h A_{h,l} ⊙ ∂L/∂A_{h,l}| (eq. 1) and the three flows (eq. 2-4)
  over the pairs j < i of the prompt, as the reference code's `get_proportion` counts them
  (the diagonal excluded; |C_wp| = Σ_k p_k, |C_pq| = C, |C_ww| = q(q+1)/2 − |C_wp| − |C_pq|, with
  0-based positions and q the target);
- `PrefixRunner`: prompts sharing the demonstrations run as one prefix forward (no gradient: neither
  analysis changes the prefix) and batches of their suffixes on its KV cache;
- `target_attention`: per layer, the target's attention on each class's label words, summed over
  heads and over the class's demonstrations (the reference's `Predictor.get_attention`);
- `auc_per_layer`, `cumulative_share`: AUC-ROC of those scores against the model's own answer
  (binary: the second class's score; more classes: scores normalised, one-vs-one), and R_l;
- `reweight_edit`, `fit_beta`: anchor re-weighting (§3.1, eq. 8), β per (layer, head, class), the
  target row's attention on a class's label words × exp(β) (renormalised only if asked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from transformers import DynamicCache

from workers.anchors.prompts import Prompt
from workers.internals.decoding import CACHE_ARG
from workers.interventions.anchors import Edit, Observe, anchored, reweight_edit
from workers.models.loading import LM
from workers.progress import Progress, no_progress


def label_logits(logits: torch.Tensor, label_ids: Sequence[int]) -> torch.Tensor:
    """(.., V) -> (.., C) at least float32: the label words' first-token logits."""
    z = logits[..., list(label_ids)]
    return z.to(torch.promote_types(z.dtype, torch.float32))


# -- information flow -----------------------------------------------------------------------------
def flow_masks(n: int, label_positions: Sequence[int], target: int, device=None) -> tuple[torch.Tensor, ...]:
    """Boolean (n, n) masks of C_wp, C_pq and C_ww over rows and columns ≤ target, pairs j < i."""
    idx = torch.arange(n, device=device)
    lower = (idx[None, :] < idx[:, None]) & (idx[:, None] <= target)  # j < i ≤ q
    labels = torch.zeros(n, dtype=torch.bool, device=device)
    labels[list(label_positions)] = True
    wp = lower & labels[:, None]
    pq = torch.zeros(n, n, dtype=torch.bool, device=device)
    pq[target, list(label_positions)] = True
    ww = lower & ~wp & ~pq
    return wp, pq, ww


def flow_means(saliency: torch.Tensor, label_positions: Sequence[int], target: int) -> tuple[float, float, float]:
    """(n, n) saliency of one layer -> (S_wp, S_pq, S_ww)."""
    out = []
    for mask in flow_masks(saliency.shape[-1], label_positions, target, saliency.device):
        count = int(mask.sum())
        out.append(float(saliency[mask].sum()) / count if count else 0.0)
    return tuple(out)  # type: ignore[return-value]


def saliency(lm: LM, ids: Sequence[int], label_ids: Sequence[int], label: int | None,
             edit: Edit | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per layer I_l (n, n) fp32 for the prompt `ids` (target: its last token), and the label
    logits (C,). L = cross-entropy of the label logits against `label` (None: the prediction)."""
    x = lm.embed(torch.tensor([list(ids)], device=lm.device)).detach().requires_grad_()  # (1, n, d)
    kept: dict[int, torch.Tensor] = {}

    def observe(layer: int, A: torch.Tensor) -> None:  # A: (1, H, n, n), in the graph
        A.retain_grad()
        kept[layer] = A

    with torch.enable_grad(), anchored(lm, edit=edit, observe=observe):
        logits = lm.model(inputs_embeds=x, use_cache=False, logits_to_keep=1).logits[0, -1]  # (V,)
        z = label_logits(logits, label_ids)  # (C,)
        y = int(z.argmax()) if label is None else label
        loss = F.cross_entropy(z[None], torch.tensor([y], device=z.device))
        loss.backward()
    maps = [(kept[l].detach().float() * kept[l].grad.float()).sum(1)[0].abs() for l in range(len(kept))]  # (n, n) each
    return maps, z.detach()


# -- shared prefix, batched suffixes --------------------------------------------------------------
class PrefixRunner:
    """Forwards of prompts that share their first `P` tokens: one prefix forward, then batches of
    suffixes (right-padded: a causal model's rows never read the padding after their own end)."""

    def __init__(self, lm: LM, prompts: Sequence[Prompt], label_ids: Sequence[int], max_rows: int = 16):
        self.lm, self.prompts, self.label_ids, self.max_rows = lm, list(prompts), list(label_ids), max_rows
        first = prompts[0].ids
        P = min(len(p.ids) for p in prompts) - 1  # every prompt keeps at least its target in the suffix
        for p in prompts[1:]:
            P = min(P, next((i for i, (a, b) in enumerate(zip(first, p.ids)) if a != b), P))
        self.P = P
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.forwards = 0
        if P > 0:
            with torch.no_grad():
                out = lm.model(input_ids=torch.tensor([first[:P]], device=lm.device), use_cache=True,
                               logits_to_keep=1)
            cache = getattr(out, CACHE_ARG, None) or out.past_key_values
            self.kv = [(layer.keys, layer.values) for layer in cache.layers]  # (1, kv_heads, P, head_dim)
            self.forwards += 1

    def _cache(self, rows: int) -> DynamicCache | None:
        if not self.kv:
            return None
        cache = DynamicCache(config=self.lm.config)
        for layer, (k, v) in zip(cache.layers, self.kv):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)
        return cache

    def targets(self, rows: Sequence[int]) -> torch.Tensor:
        """(B,) absolute target positions."""
        return torch.tensor([self.prompts[r].target for r in rows], device=self.lm.device)

    def forward(self, rows: Sequence[int], edit: Edit | None = None, observe: Observe | None = None) -> torch.Tensor:
        """(B, C) label logits at each row's target (grad enabled as the caller has it)."""
        lm, P = self.lm, self.P
        suffixes = [self.prompts[r].ids[P:] for r in rows]
        width = max(len(s) for s in suffixes)
        pad = lm.tokenizer.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes], device=lm.device)  # (B, s)
        ends = torch.tensor([len(s) - 1 for s in suffixes], device=lm.device)  # (B,) target row in the suffix
        keep = torch.unique(ends)  # (k,) ascending
        cache = self._cache(len(rows))
        kwargs = {CACHE_ARG: cache, "use_cache": True} if cache is not None else {"use_cache": False}
        with anchored(lm, edit=edit, observe=observe):
            logits = lm.model(input_ids=ids, logits_to_keep=keep, **kwargs).logits  # (B, k, V)
        self.forwards += 1
        at = torch.searchsorted(keep, ends)  # (B,) column of each row's target among the kept
        return label_logits(logits[torch.arange(len(rows), device=lm.device), at], self.label_ids)

    def batches(self, rows: Sequence[int]) -> list[list[int]]:
        rows = list(rows)
        return [rows[i:i + self.max_rows] for i in range(0, len(rows), self.max_rows)]


def target_attention(runner: PrefixRunner, rows: Sequence[int], n_classes: int,
                     progress: Progress = no_progress) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, L, C) the target's attention on each class's label words per layer (Σ heads, Σ words),
    and (Q, C) the label logits, for prompts `rows` (same label positions: shared demonstrations)."""
    first = runner.prompts[rows[0]]
    cols = torch.tensor(first.label_positions, device=runner.lm.device)  # (m,)
    classes = torch.tensor(first.label_classes, device=runner.lm.device)  # (m,)
    n_layers = len(runner.lm.layers)
    scores = torch.zeros(len(rows), n_layers, n_classes)
    logits = torch.zeros(len(rows), n_classes)
    done = 0
    for batch in runner.batches(rows):
        t = runner.targets(batch) - runner.P  # (B,) rows of the suffix
        b = torch.arange(len(batch), device=t.device)

        def observe(layer: int, A: torch.Tensor, b=b, t=t, start=done) -> None:  # A: (B, H, s, P + s)
            on_words = A[b, :, t][:, :, cols].float().sum(1)  # (B, m)
            per_class = torch.zeros(len(b), n_classes, device=A.device).index_add_(1, classes, on_words)
            scores[start:start + len(b), layer] = per_class.cpu()

        with torch.no_grad():
            logits[done:done + len(batch)] = runner.forward(batch, observe=observe).cpu()
        done += len(batch)
        progress(done / len(rows))
    return scores, logits


def auc_per_layer(scores: np.ndarray, predicted: np.ndarray) -> tuple[list[float], int]:
    """scores (Q, L, C), predicted (Q,) class indices -> AUC-ROC per layer of the scores as a predictor
    of `predicted` (the reference notebook's `get_auc_roc_score`), and how many classes were predicted.
    Raises ValueError when fewer than 2 classes are predicted (AUC undefined)."""
    present = sorted({int(p) for p in predicted})
    if len(present) < 2:
        raise ValueError("the model predicts one class only")
    out = []
    for layer in range(scores.shape[1]):
        s = scores[:, layer, present].astype(np.float64)  # (Q, c)
        if len(present) == 2:
            out.append(float(roc_auc_score(predicted, s[:, 1])))
        else:
            s = s / np.clip(s.sum(-1, keepdims=True), 1e-30, None)
            out.append(float(roc_auc_score(predicted, s, multi_class="ovo", labels=present)))
    return out, len(present)


def cumulative_share(auc: Sequence[float]) -> list[float] | None:
    """R_l = Σ_{i≤l}(AUC_i − ½) / Σ_i(AUC_i − ½); None when the denominator is 0."""
    c = np.cumsum(np.asarray(auc, dtype=np.float64) - 0.5)
    if abs(c[-1]) < 1e-12:
        return None
    return (c / c[-1]).tolist()


# -- anchor re-weighting --------------------------------------------------------------------------
def fit_beta(runner: PrefixRunner, rows: Sequence[int], gold: Sequence[int], n_classes: int, *, epochs: int,
             lr: float, batch_size: int, seed: int, renormalize: bool,
             progress: Callable[[float], None] = no_progress) -> tuple[torch.Tensor, list[float]]:
    """β (L, H, C), zero at the start, by Adam on the cross-entropy of the label logits against `gold`
    over the prompts `rows` (the reference's `reweighting.train`: Adam, per-epoch shuffle)."""
    lm = runner.lm
    heads = lm.facts()["n_heads"]
    first = runner.prompts[rows[0]]
    cols = torch.tensor(first.label_positions, device=lm.device)
    classes = torch.tensor(first.label_classes, device=lm.device)
    beta = torch.zeros(len(lm.layers), heads, n_classes, device=lm.device, requires_grad=True)
    opt = torch.optim.Adam([beta], lr=lr)
    g = torch.Generator().manual_seed(seed)
    y_all = torch.tensor(list(gold), device=lm.device)
    history = []
    steps = epochs * -(-len(rows) // batch_size)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=g).tolist()
        total = 0.0
        for i in range(0, len(order), batch_size):
            pick = order[i:i + batch_size]
            batch = [rows[k] for k in pick]
            edit = reweight_edit(beta, cols, classes, runner.targets(batch), renormalize)
            with torch.enable_grad():
                z = runner.forward(batch, edit=edit)  # (B, C)
                loss = F.cross_entropy(z, y_all[pick])
                loss.backward()
            opt.step()
            opt.zero_grad()
            total += float(loss.detach()) * len(pick)
            step += 1
            progress(step / steps)
        history.append(total / len(rows))
    return beta.detach(), history
