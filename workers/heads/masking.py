"""Head masks (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", §2): a gate ξ_h on
each attention head's output, Att(x) = Σ_h ξ_h · z_h W_O^h, set as a scale on head h's slice of the
output projection's input (`attn_head` in workers/patching/sites.py). ξ_h = 0 masks the head, ξ = 1
is the model itself. Under grouped-query attention ξ gates a *query* head: the KV head it shares is
untouched, so its siblings are not masked with it.

Every masked variant is a real forward. One row of a batch is (text, mask configuration); the rows of
a batch are the texts right-padded to one length (causal models need no attention mask for that:
padding comes after every real position; encoders get one). Where blocks can be entered mid-network
(LLaMA-like, `workers.patching.exact.skips_layers`), a row whose first masked layer is l starts at l
from the unmasked run's residual stream there (kept for every text and layer while it fits
RESID_BYTES; beyond, rows start at layer 0); batches are cut by the patching engine's cost model
(`workers.patching.exact.plan`). Hooks come off after every forward; no weight is touched.

The loss of a row (`Objective`):
- `lm_loss`: the summed next-token cross-entropy over the text's tokens (weight: tokens predicted);
- `target_loss`: the cross-entropy of the text's target token after its last position (weight 1),
  with next-token accuracy;
- `embedding_drift` (encoders, which carry no LM head here): 1 − cos between the row's mean-pooled last
  hidden state and the unmasked one's (weight 1).
A set of rows' loss is Σ sums / Σ weights: token-weighted over texts for `lm_loss`, a mean otherwise.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from workers.internals.batching import batch_tokens, forward_overhead
from workers.internals.hooks import capture_inputs, hooks
from workers.models.loading import LM
from workers.patching.exact import Counts, Patch, body, from_layer, plan, skips_layers
from workers.patching.sites import site_hooks, site_of
from workers.progress import Progress, no_progress

Head = tuple[int, int]  # (layer, query head)
Mask = dict[Head, float]  # head -> ξ (heads not named keep ξ = 1)
LOGIT_CHUNK = 256  # positions per unembedding call (a (chunk, V) fp32 block)
RESID_BYTES = 2 << 30  # the most residual stream kept for mid-network starts; beyond it rows start at layer 0


@dataclass
class Objective:
    kind: str  # "lm_loss" | "target_loss" | "embedding_drift"
    targets: list[int] | None = None  # target_loss: one token id per text
    base_embeddings: torch.Tensor | None = None  # embedding_drift: (K, d) fp32, the unmasked mean-pooled states


@dataclass
class Values:
    """Per row: the loss summed over what it scores, its weight, and correct predictions (target_loss)."""

    sums: torch.Tensor  # (R,) fp64
    weights: torch.Tensor  # (R,) fp64
    correct: torch.Tensor  # (R,) fp64

    def loss(self) -> float:
        return float(self.sums.sum() / self.weights.sum())

    def accuracy(self) -> float:
        return float(self.correct.sum() / self.weights.sum())


@dataclass
class Texts:
    """The texts' token ids and, once the unmasked run has kept it, the residual stream entering every
    block, resid[k][l]: (n_k, d) (LLaMA-like models only)."""

    ids: list[list[int]]
    pad_id: int
    resid: list[list[torch.Tensor]] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [len(i) for i in self.ids]


def trunk(lm: LM) -> nn.Module:
    """What runs the blocks and returns the final hidden state: the decoder without its LM head, or the
    encoder model itself."""
    return body(lm) if lm.spec.task == "causal_lm" else lm.model


def n_units(lm: LM) -> int:
    """Query heads per layer (read from the config: LLaMA/BERT and GPT-2 spellings)."""
    c = lm.config
    return int(getattr(c, "num_attention_heads", None) or c.n_head)


def head_width(lm: LM) -> int:
    """Features per head: the config's `head_dim` where it has one, never assumed hidden // heads."""
    c = lm.config
    return int(getattr(c, "head_dim", None) or (getattr(c, "hidden_size", None) or c.n_embd) // n_units(lm))


def scale_hooks(lm: LM, scales: dict[int, torch.Tensor]):
    """(forward hooks, pre-hooks) multiplying each head's output at layer l by scales[l]: (H,) for
    every row or (R, H) per row. Differentiable in the scales (the gradient importance uses it)."""
    def edit(layer: int, a: torch.Tensor) -> torch.Tensor | None:  # a: (R, T, H, head_dim)
        s = scales.get(layer)
        if s is None:
            return None
        s = s.to(a.dtype)
        return a * (s[None, None, :, None] if s.dim() == 1 else s[:, None, :, None])
    return site_hooks(lm, site_of(lm, "attn_head"), sorted(scales), edit)


def _pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (R, T) and the attention mask (R, T)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s)
        mask[r, :len(s)] = 1
    return ids.to(device), mask.to(device)


def row_values(lm: LM, h: torch.Tensor, rows: list[int], texts: Texts, obj: Objective) -> Values:
    """The objective of each row from its final hidden states h (R, T, d); rows[r] is the row's text.
    Differentiable in h."""
    R = len(rows)
    dev = h.device
    correct = torch.zeros(R, dtype=torch.float64)
    if obj.kind == "embedding_drift":
        lengths = torch.tensor([texts.lengths[k] for k in rows], device=dev)
        keep = (torch.arange(h.shape[1], device=dev)[None, :] < lengths[:, None]).to(h.dtype)  # (R, T)
        pooled = (h * keep[..., None]).sum(1).float() / lengths[:, None].float()  # (R, d)
        base = obj.base_embeddings[torch.tensor(rows)].to(dev)  # (R, d)
        drift = 1.0 - torch.nn.functional.cosine_similarity(pooled, base, dim=-1)
        return Values(drift.double().cpu() if not drift.requires_grad else drift.double(),
                      torch.ones(R, dtype=torch.float64), correct)
    head = lm.module(lm.arch.unembed)
    if obj.kind == "target_loss":
        last = torch.tensor([texts.lengths[k] - 1 for k in rows], device=dev)
        logits = head(h[torch.arange(R, device=dev), last]).float()  # (R, V)
        target = torch.tensor([obj.targets[k] for k in rows], device=dev)
        nll = torch.logsumexp(logits, -1) - logits.gather(1, target[:, None])[:, 0]
        correct = (logits.argmax(-1) == target).double().cpu()
        return Values(nll.double() if nll.requires_grad else nll.double().cpu(),
                      torch.ones(R, dtype=torch.float64), correct)
    # lm_loss: position i predicts token i + 1, for i < n − 1
    row_of, pos, nxt = [], [], []
    for r, k in enumerate(rows):
        n = texts.lengths[k]
        row_of += [r] * (n - 1)
        pos += range(n - 1)
        nxt += texts.ids[k][1:]
    row_t, pos_t, nxt_t = (torch.tensor(v, device=dev) for v in (row_of, pos, nxt))
    sums = torch.zeros(R, dtype=torch.float64, device=dev)
    for a in range(0, len(row_of), LOGIT_CHUNK):
        b = min(a + LOGIT_CHUNK, len(row_of))
        logits = head(h[row_t[a:b], pos_t[a:b]]).float()  # (chunk, V)
        nll = torch.logsumexp(logits, -1) - logits.gather(1, nxt_t[a:b, None])[:, 0]
        sums = sums.index_add(0, row_t[a:b], nll.double())
    weights = torch.tensor([texts.lengths[k] - 1 for k in rows], dtype=torch.float64)
    return Values(sums if sums.requires_grad else sums.cpu(), weights, correct)


def _forward(lm: LM, texts: Texts, rows: list[int], l0: int, scales: dict[int, torch.Tensor]) -> torch.Tensor:
    """The final hidden states (R, T, d) of `rows` (text indices) from layer l0, with the head scales."""
    seqs = [texts.ids[k] for k in rows]
    ids, mask = _pad(seqs, texts.pad_id, lm.device)
    kwargs: dict = {}
    if lm.spec.task == "causal_lm":
        kwargs["use_cache"] = False
    else:
        kwargs["attention_mask"] = mask
    if l0 > 0:
        T, d = ids.shape[1], texts.resid[rows[0]][l0].shape[-1]
        emb = torch.zeros(len(rows), T, d, dtype=texts.resid[rows[0]][l0].dtype, device=lm.device)
        for r, k in enumerate(rows):
            emb[r, :texts.lengths[k]] = texts.resid[k][l0]
        kwargs["inputs_embeds"] = emb  # (R, T, d)
    else:
        kwargs["input_ids"] = ids  # (R, T)
    forward, pre = scale_hooks(lm, scales)
    with hooks(forward=forward, pre=pre), (from_layer(lm, l0) if l0 > 0 else nullcontext()):
        return trunk(lm)(**kwargs).last_hidden_state


@torch.no_grad()
def base_run(lm: LM, texts: Texts, obj: Objective, counts: Counts, keep_resid: bool,
             progress: Progress = no_progress) -> Values:
    """The unmasked objective per text, in batches; keeps the residual entering every block (where
    masked rows may start mid-network) and, for `embedding_drift`, the unmasked embeddings."""
    K, L = len(texts.ids), len(lm.layers)
    kept_bytes = sum(texts.lengths) * L * lm.embed.weight.shape[1] * torch.finfo(lm.dtype).bits // 8
    keep = keep_resid and skips_layers(lm) and kept_bytes <= RESID_BYTES
    texts.resid = [[] for _ in range(K)]
    out = Values(torch.zeros(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64),
                 torch.zeros(K, dtype=torch.float64))
    embeddings = []
    batches = _text_batches(lm, texts, with_grad=False)
    for b, rows in enumerate(batches):
        sites = dict(enumerate(lm.layers)) if keep else {}
        with capture_inputs(sites) as resid:
            h = _forward(lm, texts, rows, 0, {})
        for r, k in enumerate(rows):
            n = texts.lengths[k]
            texts.resid[k] = [resid[i][r, :n].clone() for i in range(L)] if keep else []
        if obj.kind == "embedding_drift":
            mask = _pad([texts.ids[k] for k in rows], texts.pad_id, lm.device)[1].to(h.dtype)
            embeddings.append(((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).float().cpu())
        else:
            v = row_values(lm, h, rows, texts, obj)
            idx = torch.tensor(rows)
            out.sums[idx], out.weights[idx], out.correct[idx] = v.sums, v.weights, v.correct
        _count(counts, texts, rows, 0, L)
        progress((b + 1) / len(batches))
    if obj.kind == "embedding_drift":
        obj.base_embeddings = torch.cat(embeddings)[torch.argsort(torch.tensor([k for rows in batches for k in rows]))]
        out.weights[:] = 1.0  # drift 0 for every text
    return out


def _text_batches(lm: LM, texts: Texts, with_grad: bool) -> list[list[int]]:
    """Texts in order of length, cut so that rows × padded length fits the token budget."""
    budget = batch_tokens(lm, with_grad)
    order = sorted(range(len(texts.ids)), key=lambda k: texts.lengths[k])
    out: list[list[int]] = []
    for k in order:
        if out and (len(out[-1]) + 1) * texts.lengths[k] <= budget:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def _count(counts: Counts, texts: Texts, rows: list[int], l0: int, L: int) -> None:
    T = max(texts.lengths[k] for k in rows)
    counts.forwards += 1
    counts.positions += len(rows) * T * (L - l0)
    counts.naive += sum(texts.lengths[k] for k in rows) * L


def mask_gradients(lm: LM, texts: Texts, heads: list[Head], obj: Objective, counts: Counts,
                   progress: Progress = no_progress) -> torch.Tensor:
    """∂L_k/∂ξ_h at ξ = 1 for every text k and head h: (K, len(heads)) fp64, signed. L_k is text k's
    own loss (its mean over what it scores); every row has its own ξ, so one backward of Σ_k L_k
    gives each text's gradient."""
    H = n_units(lm)
    layers = sorted({layer for layer, _ in heads})
    cols = torch.tensor([layer * H + h for layer, h in heads])
    out = torch.zeros(len(texts.ids), len(heads), dtype=torch.float64)
    batches = _text_batches(lm, texts, with_grad=True)
    for b, rows in enumerate(batches):
        xi = torch.ones(len(rows), len(lm.layers), H, device=lm.device, requires_grad=True)  # (R, L, H)
        with torch.enable_grad():
            h = _forward(lm, texts, rows, 0, {layer: xi[:, layer] for layer in layers})
            v = row_values(lm, h, rows, texts, obj)
            (v.sums.to(lm.device) / v.weights.to(lm.device)).sum().backward()
        out[torch.tensor(rows)] = xi.grad.flatten(1)[:, cols].double().cpu()
        _count(counts, texts, rows, 0, len(lm.layers))
        counts.forwards += 1  # the backward
        progress((b + 1) / len(batches))
    return out


@torch.no_grad()
def masked_values(lm: LM, texts: Texts, rows: list[tuple[int, Mask]], obj: Objective, counts: Counts,
                  progress: Progress = no_progress) -> Values:
    """The objective of each row (text k, mask): (len(rows),) each, in row order. Rows are sorted by
    the layer their first masked head is in and batched (module docstring)."""
    L, H = len(lm.layers), n_units(lm)
    skips = skips_layers(lm) and bool(texts.resid) and all(texts.resid)  # rows start mid-network only from a kept residual stream
    starts = [min((layer for layer, _ in m), default=L) if skips else 0 for _, m in rows]
    order = sorted(range(len(rows)), key=lambda r: (starts[r], texts.lengths[rows[r][0]]))
    T = max(texts.lengths)
    budget = batch_tokens(lm, with_grad=False)
    batches = plan([Patch(min(starts[r], L - 1)) for r in order], T, L, forward_overhead(lm), budget)
    out = Values(torch.zeros(len(rows), dtype=torch.float64), torch.zeros(len(rows), dtype=torch.float64),
                 torch.zeros(len(rows), dtype=torch.float64))
    for b, (i, j) in enumerate(batches):
        chosen = order[i:j]
        l0 = min(starts[r] for r in chosen)
        l0 = min(l0, L - 1) if skips else 0
        scales: dict[int, torch.Tensor] = {}
        for r_in_batch, r in enumerate(chosen):
            for (layer, head), xi in rows[r][1].items():
                if layer not in scales:
                    scales[layer] = torch.ones(len(chosen), H, device=lm.device)
                scales[layer][r_in_batch, head] = xi
        text_rows = [rows[r][0] for r in chosen]
        h = _forward(lm, texts, text_rows, l0, scales)
        v = row_values(lm, h, text_rows, texts, obj)
        idx = torch.tensor(chosen)
        out.sums[idx], out.weights[idx], out.correct[idx] = v.sums, v.weights, v.correct
        _count(counts, texts, text_rows, l0, L)
        progress((b + 1) / len(batches))
    return out


def head_losses(lm: LM, texts: Texts, heads: list[Head], obj: Objective, counts: Counts,
                progress: Progress = no_progress) -> tuple[list[float], list[float]]:
    """The loss and accuracy over every text with each head masked alone (ξ_h = 0): one row per
    (head, text), batched."""
    K = len(texts.ids)
    rows = [(k, {head: 0.0}) for head in heads for k in range(K)]
    v = masked_values(lm, texts, rows, obj, counts, progress)
    sums, weights, correct = (t.reshape(len(heads), K).sum(1) for t in (v.sums, v.weights, v.correct))
    return (sums / weights).tolist(), (correct / weights).tolist()


def joint_loss(lm: LM, texts: Texts, mask: Mask, obj: Objective, counts: Counts) -> tuple[float, float]:
    """The loss and accuracy over every text with every head of `mask` masked at once."""
    v = masked_values(lm, texts, [(k, mask) for k in range(len(texts.ids))], obj, counts)
    return v.loss(), v.accuracy()
