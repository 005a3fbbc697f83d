"""`attention_patterns`: classify each head's attention map as vertical, diagonal,
vertical+diagonal, block or heterogeneous (Kovaleva et al. 2019, "Revealing the Dark Secrets of
BERT", §4.1). The paper trains a small CNN on 400 hand-labelled maps; here the classes come from
three or four features of the map and fixed thresholds, so nothing is trained and every decision
can be read off the returned features.

Features of a map α (n queries × n keys), over the queries that see at least two keys (a causal
model's first row is always [1, 0, ...]):
- vertical: the mass on the k most-attended key columns (column mass = mean over queries),
  k = max(2, ⌈0.05 n⌉): [CLS], [SEP], BOS, punctuation stripes;
- diagonal: the mass on keys at offset −1, 0 or +1 from the query (previous / same / next token);
- union: the mass on either of those sets;
- block: the mass inside the query's own segment, where segments end at special tokens and at
  sentence-final punctuation or newlines; defined only when at least two segments have two tokens.
Each is taken as excess over the same feature of the uniform map with the same mask,
(x − x_u) / (1 − x_u), so short prompts and causal masks do not look patterned by themselves.

Rules, first match wins: vertical+diagonal if vertical ≥ 0.25, diagonal ≥ 0.25 and union ≥ 0.5;
vertical if vertical ≥ 0.5; diagonal if diagonal ≥ 0.5; block if block ≥ 0.5; else heterogeneous.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from schemas.common import TextInput
from schemas.kinds.attention_patterns import (
    PATTERNS,
    AttentionPatternsJob,
    AttentionPatternsParams,
    AttentionPatternsResult,
    HeadPattern,
    PatternFeatures,
)
from workers.context import Context
from workers.errors import BadInput
from workers.internals.capture import attention_parts, forward
from workers.internals.inputs import encode_prompt, resolve_indices
from workers.models.loading import LM, Encoded

THRESHOLDS = {"single": 0.5, "mixed_each": 0.25, "mixed_union": 0.5, "block": 0.5, "top_columns_share": 0.05}
FEATURES = ("vertical", "diagonal", "union", "block")
MIN_TOKENS = 4
SENTENCE_END = set(".!?。！？")


def segments(lm: LM, enc: Encoded) -> torch.Tensor | None:
    """(n,) segment id per token; a segment starts after a run of enders (special tokens past the
    first position, sentence-final punctuation, newlines). None under two segments of two tokens."""
    texts = lm.token_strings(enc.ids)
    ender = [(s and i > 0) or "\n" in t or (t.strip() != "" and set(t.strip()) <= SENTENCE_END)
             for i, (t, s) in enumerate(zip(texts, enc.special))]
    seg, ids = 0, []
    for i in range(len(ender)):
        if i > 0 and ender[i - 1] and not ender[i]:
            seg += 1
        ids.append(seg)
    sizes = Counter(ids)
    return torch.tensor(ids) if sum(n >= 2 for n in sizes.values()) >= 2 else None


def raw_features(alpha: torch.Tensor, causal: bool, seg: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Features of maps (H, n, n) -> each (H,), before the uniform correction."""
    a = alpha.double()
    n = a.shape[-1]
    q = torch.arange(n, device=a.device)
    rows = q[1:] if causal else q  # queries that see at least two keys
    a = a[:, rows]  # (H, r, n)
    near = ((q[None, :] - rows[:, None]).abs() <= 1).double()  # (r, n): key at offset −1, 0, +1
    columns = a.mean(1)  # (H, n)
    k = max(2, math.ceil(THRESHOLDS["top_columns_share"] * n))
    top = columns.topk(min(k, n), dim=-1).indices  # (H, k)
    on_top = torch.zeros_like(columns).scatter_(1, top, 1.0)  # (H, n)
    out = {
        "vertical": columns.gather(1, top).sum(-1),
        "diagonal": (a * near).sum(-1).mean(-1),
        "union": (a * torch.maximum(near[None], on_top[:, None, :])).sum(-1).mean(-1),
    }
    if seg is not None:
        seg = seg.to(a.device)
        out["block"] = (a * (seg[rows][:, None] == seg[None, :])).sum(-1).mean(-1)
    return out


def features(alpha: torch.Tensor, causal: bool, seg: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Features of maps (H, n, n) as excess over the uniform map with the same mask, each (H,)."""
    n = alpha.shape[-1]
    visible = torch.ones(n, n, dtype=torch.float64, device=alpha.device)
    if causal:
        visible = visible.tril()
    uniform = raw_features((visible / visible.sum(-1, keepdim=True))[None], causal, seg)
    raw = raw_features(alpha, causal, seg)
    # a feature the uniform map already saturates (short causal prompts) says nothing: 0
    return {f: torch.where(1.0 - uniform[f] > 1e-6, (raw[f] - uniform[f]) / (1.0 - uniform[f]).clamp_min(1e-6), 0.0)
            for f in raw}


def classify(f: dict[str, float]) -> str:
    t = THRESHOLDS
    if f["vertical"] >= t["mixed_each"] and f["diagonal"] >= t["mixed_each"] and f["union"] >= t["mixed_union"]:
        return "vertical+diagonal"
    if f["vertical"] >= t["single"]:
        return "vertical"
    if f["diagonal"] >= t["single"]:
        return "diagonal"
    if f.get("block") is not None and f["block"] >= t["block"]:
        return "block"
    return "heterogeneous"


@torch.no_grad()
def run(lm: LM, job: AttentionPatternsJob, ctx: Context) -> AttentionPatternsResult:
    progress, limits = ctx.progress, ctx.limits
    params: AttentionPatternsParams = job.params
    facts = lm.facts()
    layers = resolve_indices(params.layers, facts["n_layers"], ["params", "layers"], "layers", "n_layers")
    heads = resolve_indices(params.heads, facts["n_heads"], ["params", "heads"], "heads", "n_heads")
    encoded = [encode_prompt(lm, TextInput(prompt=p), limits, ("input", "prompts", k))
               for k, p in enumerate(job.input.prompts)]
    for k, enc in enumerate(encoded):
        if len(enc.ids) < MIN_TOKENS:
            raise BadInput(f"prompt {k} has {len(enc.ids)} tokens; classifying a map needs at least {MIN_TOKENS}")
    causal = lm.spec.task == "causal_lm"
    head_index = torch.tensor(heads, device=lm.device)
    # (layer, head) -> per prompt: class and features
    seen: dict[tuple[int, int], list[tuple[str, dict[str, float | None]]]] = {(i, h): [] for i in layers for h in heads}
    for k, enc in enumerate(encoded):
        seg = segments(lm, enc)

        def on_layer(layer: int, alpha: torch.Tensor, v: None) -> None:
            feats = features(alpha[head_index], causal, seg)
            for n, h in enumerate(heads):
                f = {name: float(feats[name][n]) if name in feats else None for name in FEATURES}
                seen[(layer, h)].append((classify(f), f))

        with attention_parts(lm, layers, on_layer, with_values=False):
            forward(lm, enc.ids)
        progress((k + 1) / len(encoded))

    patterns, counts = [], Counter()
    for (layer, h), per_prompt in seen.items():
        votes = Counter(c for c, _ in per_prompt)
        counts.update(votes)
        mean = {name: _mean([f[name] for _, f in per_prompt]) for name in FEATURES}
        best = max(votes.values())
        tied = [c for c in PATTERNS if votes.get(c) == best]
        pattern = tied[0] if len(tied) == 1 else (classify(mean) if classify(mean) in tied else tied[0])
        patterns.append(HeadPattern(layer=layer, head=h, pattern=pattern, votes=dict(votes),
                                    features=PatternFeatures(**mean)))
    by_key = {(p.layer, p.head): p.pattern for p in patterns}
    total = sum(counts.values())
    return AttentionPatternsResult(provenance=ctx.provenance(lm, job), 
        n_prompts=len(encoded), layers=layers, heads=heads,
        grid=[[by_key[(i, h)] for h in heads] for i in layers], patterns=patterns,
        distribution={c: counts.get(c, 0) / total for c in PATTERNS}, thresholds=THRESHOLDS,
    )


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
