"""Head × head distances over a set of texts (Bian et al. 2021, "On Attention Redundancy", §3).

Token level, from the attention maps α_h (n queries × n keys), each row a distribution over keys:
- `jensen_shannon`: the Jensen-Shannon distance √JSD(α_a[i], α_b[i]) with base-2 logarithms (a
  metric, in [0, 1]);
- `hellinger`: √(½ Σ_j (√α_a[i, j] − √α_b[i, j])²) = √(1 − Σ_j √(α_a[i, j] α_b[i, j])) (in [0, 1]);
averaged over the query rows that see at least two keys (a causal map's first row is [1, 0, ...] for
every head and would pull every pair together) and then over texts.

Sentence level, `output_correlation`: what head h writes into the residual stream on a text,
c_h = z_h W_O^h (n × d; z_h its output before the output projection, the projection's bias left
out), flattened; the distance is 1 − Pearson r of the two heads' c over positions and features
(in [0, 2]), averaged over texts. Two heads computing the same function are at 0 either way.
"""

from __future__ import annotations

import torch

from workers.heads.masking import head_width, n_units
from workers.internals.capture import attention_parts, forward, head_out_weights
from workers.internals.hooks import capture_inputs
from workers.models.loading import LM
from workers.progress import Progress, no_progress

Head = tuple[int, int]
PAIR_BLOCK = 1 << 24  # elements of one (chunk, N, rows, keys) block of the pairwise JSD


def _xlog2x(x: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(x, x) / torch.log(torch.tensor(2.0, dtype=x.dtype))


def js_distance(p: torch.Tensor) -> torch.Tensor:
    """Maps (N, r, n) of N heads (r query rows, each a distribution over n keys) -> (N, N): the JS
    distance of every pair, averaged over rows."""
    N, r, n = p.shape
    own = _xlog2x(p).sum(-1)  # (N, r): −H(p_row) in bits
    out = torch.empty(N, N, dtype=torch.float64)
    chunk = max(1, PAIR_BLOCK // max(1, N * r * n))
    for a in range(0, N, chunk):
        b = min(N, a + chunk)
        m = (p[a:b, None] + p[None]) / 2  # (c, N, r, n)
        jsd = (own[a:b, None] + own[None]) / 2 - _xlog2x(m).sum(-1)  # (c, N, r)
        out[a:b] = jsd.clamp_min(0).sqrt().mean(-1).double().cpu()
    return out


def hellinger_distance(p: torch.Tensor) -> torch.Tensor:
    """Maps (N, r, n) -> (N, N): the Hellinger distance of every pair, averaged over rows."""
    s = p.double().clamp_min(0).sqrt().transpose(0, 1)  # (r, N, n); fp64: the square root magnifies rounding
    bc = torch.bmm(s, s.transpose(1, 2))  # (r, N, N): Bhattacharyya coefficients
    mass = (s * s).sum(-1)  # (r, N): each row's own sum (1 up to the map's rounding)
    # H² = ½ Σ_j (√p_j − √q_j)² = ½ (Σp + Σq) − BC: 0 for identical rows even where Σp is 1 ± 1e-7
    return ((mass[:, :, None] + mass[:, None, :]) / 2 - bc).clamp_min(0).sqrt().mean(0).cpu()


def correlation_distance(c: torch.Tensor) -> torch.Tensor:
    """Outputs (N, m) -> (N, N): 1 − Pearson r of every pair (a constant output is at distance 1)."""
    x = c.double() - c.double().mean(1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    x = torch.where(norm > 0, x / norm.clamp_min(1e-300), torch.zeros_like(x))
    return (1 - x @ x.T).clamp(0.0, 2.0).cpu()


def _groups(heads: list[Head]) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)
    return by_layer


@torch.no_grad()
def attention_maps(lm: LM, ids: list[int], heads: list[Head]) -> torch.Tensor:
    """(N, n, n) attention maps of `heads` on one text (eager attention for this forward)."""
    by_layer = _groups(heads)
    maps: dict[int, torch.Tensor] = {}

    def on_layer(layer: int, alpha: torch.Tensor, v: None) -> None:
        maps[layer] = alpha[by_layer[layer]].float()  # (h, n, n)

    with attention_parts(lm, sorted(by_layer), on_layer, with_values=False):
        forward(lm, ids)
    return torch.cat([maps[layer] for layer in sorted(by_layer)])  # heads are sorted by (layer, head)


@torch.no_grad()
def head_outputs(lm: LM, ids: list[int], heads: list[Head]) -> torch.Tensor:
    """(N, n·d) what each head writes into the residual stream on one text, z_h W_O^h, flattened."""
    by_layer = _groups(heads)
    H, dh = n_units(lm), head_width(lm)
    modules = {str(layer): lm.layers[layer].get_submodule(lm.arch.attn_out) for layer in by_layer}
    with capture_inputs(modules) as z:
        forward(lm, ids)
    out = []
    for layer in sorted(by_layer):
        zl = z[str(layer)][0].float().reshape(-1, H, dh)[:, by_layer[layer]]  # (n, h, dh)
        w = head_out_weights(lm, layer).float()[by_layer[layer]]  # (h, dh, d)
        out.append(torch.einsum("nhe,hed->hnd", zl, w).flatten(1))  # (h, n·d)
    return torch.cat(out)


def distance_matrix(lm: LM, texts: list[list[int]], heads: list[Head], kind: str,
                    progress: Progress = no_progress) -> torch.Tensor:
    """(N, N) fp64 mean distance over `texts` between `heads` (sorted by layer, head): one forward per text."""
    causal = lm.spec.task == "causal_lm"
    total = torch.zeros(len(heads), len(heads), dtype=torch.float64)
    for k, ids in enumerate(texts):
        if kind == "output_correlation":
            total += correlation_distance(head_outputs(lm, ids, heads))
        else:
            maps = attention_maps(lm, ids, heads)
            rows = maps[:, 1:] if causal else maps  # queries that see at least two keys
            total += js_distance(rows) if kind == "jensen_shannon" else hellinger_distance(rows)
        progress((k + 1) / len(texts))
    d = total / len(texts)
    d = (d + d.T) / 2
    d.fill_diagonal_(0.0)
    return d
