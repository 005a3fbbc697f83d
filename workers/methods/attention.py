"""`attention`: weights, norms and summed norms (Kobayashi et al. 2020, "Attention is Not Only a
Weight: Analyzing Transformers with Vector Norms"; reference implementation
github.com/gorokoba560/norm-analysis-of-transformer).

One forward with eager attention; a hook on each selected layer's attention module receives α
(H, n, n) and the values captured from the value projection, computes that layer's measures and
drops the maps, so one layer's tensors are alive at a time.

- norms: ‖α_hij f_h(x_j)‖ = α_hij ‖f_h(x_j)‖ (α is a scalar), with f_h(x_j) = (x_j W_V + b_V) W_O^h.
  Under grouped-query attention the value is the shared KV head's, h // (n_heads // n_kv_heads),
  and W_O^h the query head's own slice; the reference implementation covers BERT (one value per head).
- summed_norms: ‖Σ_h α_hij f_h(x_j)‖² = Σ_{h,g} α_hij α_gij G_j[h, g] with G_j = F_j F_jᵀ the
  heads×heads Gram matrix of the key's vectors F_j (H, d). The reference materialises the
  (heads, n, n, d) tensor of weighted vectors; here memory is O(H²·n + H·n²) and no d-sized
  tensor per (query, key) pair exists. The quadratic form runs in float64, so the square root of a
  near-zero sum is still exact to ~1e-8.
- aggregate token_class: the paper's comparison (§4.2) of attention by weight and by norm to
  special tokens ([CLS], [SEP], BOS, chat markers), punctuation and other tokens, averaged over
  queries; the reference averages over a corpus instead, which a caller does by sending prompts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import torch

from schemas.kinds.attention import (
    AttentionJob,
    AttentionLayer,
    AttentionParams,
    AttentionResult,
    ClassShares,
    HeadTokenClass,
    LayerTokenClass,
)
from workers.context import Context
from workers.internals.capture import attention_parts, forward, head_value_vectors, kv_head_of
from workers.internals.inputs import encode_for_dissection, resolve_indices
from workers.models.loading import LM, Encoded
from workers.progress import Progress, no_progress

TOKEN_CLASSES = ("special", "punctuation", "other")
Maps = dict[str, torch.Tensor]


def norms_of(alpha: torch.Tensor, f_norm: torch.Tensor) -> torch.Tensor:
    """‖α_hij f_h(x_j)‖ = α_hij ‖f_h(x_j)‖: (h, n, n) weights and (h, n) vector norms -> (h, n, n)."""
    return alpha.float() * f_norm[:, None, :]


def summed_norms_of(alpha: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """‖Σ_h α_hij f_h(x_j)‖ over all heads, (n, n), from α (H, n, n) and f (H, n, d) via per-key Gram
    matrices: memory O(H²·n + H·n²), float64."""
    f64 = f.double()
    gram = torch.einsum("hjd,gjd->jhg", f64, f64)  # (n_key, H, H)
    a = alpha.double().permute(2, 0, 1)  # (n_key, H, n_query)
    squared = (a * torch.bmm(gram, a)).sum(1)  # (n_key, n_query)
    return squared.clamp_min(0.0).sqrt().T.float()  # (n_query, n_key)


def attention_maps(lm: LM, ids: list[int], layers: list[int], heads: list[int], measures: tuple[str, ...],
                   progress: Progress = no_progress,
                   reduce: Callable[[int, Maps], Any] | None = None) -> dict[int, Any]:
    """layer -> {measure: tensor} for one sequence ([head] axes along `heads`), or whatever
    `reduce(layer, maps)` makes of each layer's maps. One forward; one layer's maps alive at a time."""
    out: dict[int, Any] = {}
    head_index = torch.tensor(heads, device=lm.device)
    needs_values = "norms" in measures or "summed_norms" in measures

    def on_layer(layer: int, alpha: torch.Tensor, v: torch.Tensor | None) -> None:
        maps: Maps = {}
        if "weights" in measures:
            maps["weights"] = alpha[head_index].float()  # (h, n, n)
        if needs_values:
            f = head_value_vectors(lm, layer, v)  # (H, n, d)
            if "norms" in measures:
                maps["norms"] = norms_of(alpha[head_index], f[head_index].norm(dim=-1))
            if "summed_norms" in measures:
                maps["summed_norms"] = summed_norms_of(alpha, f)
        out[layer] = reduce(layer, maps) if reduce else maps
        progress(len(out) / len(layers))

    with torch.no_grad(), attention_parts(lm, layers, on_layer, with_values=needs_values):
        forward(lm, ids)
    return out


def token_classes(lm: LM, enc: Encoded) -> list[str]:
    """special (BOS, [CLS], [SEP], chat markers), punctuation (every character a Unicode P*), other."""
    out = []
    for tok, special in zip(lm.token_strings(enc.ids), enc.special):
        text = tok.strip()
        if special:
            out.append("special")
        elif text and all(unicodedata.category(c).startswith("P") for c in text):
            out.append("punctuation")
        else:
            out.append("other")
    return out


def class_shares(mass: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Share of each query's mass per key class, averaged over queries: (.., q, k), (k, C) -> (.., C)."""
    per_class = mass.double() @ onehot  # (.., q, C)
    return (per_class / per_class.sum(-1, keepdim=True).clamp_min(1e-30)).mean(-2)


def _shares(row: torch.Tensor) -> ClassShares:
    return ClassShares(**dict(zip(TOKEN_CLASSES, row.tolist())))


def _token_class_reducer(classes: list[str], heads: list[int], device: torch.device):
    onehot = torch.tensor([[c == k for k in TOKEN_CLASSES] for c in classes], dtype=torch.float64, device=device)

    def reduce(layer: int, maps: Maps) -> LayerTokenClass:
        by_weight = class_shares(maps["weights"], onehot)  # (h, C)
        by_norm = class_shares(maps["norms"], onehot)  # (h, C)
        return LayerTokenClass(
            layer=layer,
            heads=[HeadTokenClass(head=h, weight=_shares(w), norm=_shares(n))
                   for h, w, n in zip(heads, by_weight, by_norm)],
            weight=_shares(by_weight.mean(0)),
            summed_norm=_shares(class_shares(maps["summed_norms"], onehot)),
        )
    return reduce


def run(lm: LM, job: AttentionJob, ctx: Context) -> AttentionResult:
    progress, limits = ctx.progress, ctx.limits
    params: AttentionParams = job.params
    enc, facts, layers = encode_for_dissection(lm, job, limits)
    heads = resolve_indices(params.heads, facts["n_heads"], ["params", "heads"], "heads", "n_heads")
    classes = token_classes(lm, enc)
    result: dict[str, Any] = {
        "tokens": lm.token_strings(enc.ids), "token_classes": classes, "heads": heads,
        "kv_heads": kv_head_of(lm)[heads].tolist(), "layers": [],
    }
    if params.aggregate == "token_class":
        reduce = _token_class_reducer(classes, heads, lm.device)
        per_layer = attention_maps(lm, enc.ids, layers, heads, ("weights", "norms", "summed_norms"), progress, reduce)
        result["token_class"] = [per_layer[i] for i in layers]
    else:
        per_layer = attention_maps(lm, enc.ids, layers, heads, tuple(params.measures), progress)
        result["layers"] = [AttentionLayer(layer=i, **{m: t.tolist() for m, t in per_layer[i].items()})
                            for i in layers]
    return AttentionResult(provenance=ctx.provenance(lm, job), **result)
