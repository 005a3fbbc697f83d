"""FFN neurons: their value vectors, hooks that change their contribution, and integrated gradients
over their activations for every layer at once.

An FFN block is FFN(h) = W_out m(h) (+ b), m the intermediate activation: LLaMA m = silu(W_gate h) ⊙
W_up h (the input of down_proj), GPT-2 / BERT m = gelu(W_in h + b) (the input of c_proj /
output.dense). Neuron i of layer l writes m_i · v_i into the residual stream, v_i = W_out[:, i] its
value vector (Geva et al. 2021, "Transformer Feed-Forward Layers Are Key-Value Memories"). Every
module here acts on `lm.arch.mlp_out` and its input m, never on gate_proj (EasyEdit's LLaMA setting
hooks gate_proj, whose output is not the neuron activation).

Integrated gradients (Dai et al. 2022, "Knowledge Neurons in Pretrained Transformers", eq. 3; the
reference code github.com/Hunter-DDM/knowledge-neurons, `1_analyze_mlm.py`): for neuron i of layer l
at the position that predicts the answer,
    Attr(m_i^l) = m_i^l ∫₀¹ ∂P(α m^l)/∂m_i^l dα,
P the answer token's probability, the path scaling the whole activation vector of layer l at that
position from 0 (the baseline) to its value while every other layer computes freely. The
reference runs one IG per layer (a batch of `n_steps` scaled copies, re-running the whole prompt).
Here one pass covers all layers: row (l, k) of the batch scales layer l by α_k, hooks on every
`mlp_out` put each row's point in place at its own layer, and one backward gives the gradient of
Σ_rows w·P for every row at once (rows are independent). Earlier positions do not depend on the
scaled activation (causal attention), so they run once into a KV cache that every row reuses; each
row is then a single token. Quadrature rules are Captum's (`workers/numerics/quadrature.py`); the reference
uses a left Riemann sum (`rule="riemann_left"`). No parameter gradients are computed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from workers.internals.batching import rows_per_batch
from workers.internals.hooks import capture_inputs, hooks
from workers.models.loading import LM
from workers.numerics.quadrature import quadrature
from workers.progress import Progress, no_progress


def ffn_out_modules(lm: LM) -> list[nn.Module]:
    """The FFN output projection of every layer; its input is the activation m."""
    return [block.get_submodule(lm.arch.mlp_out) for block in lm.layers]


def n_neurons(lm: LM) -> int:
    mod = ffn_out_modules(lm)[0]
    return mod.in_features if isinstance(mod, nn.Linear) else mod.weight.shape[0]  # GPT-2 Conv1D: (in, out)


def value_vectors(lm: LM, layer: int, index: list[int]) -> torch.Tensor:
    """v_i for the given neurons of `layer`: (k, hidden)."""
    mod = ffn_out_modules(lm)[layer]
    idx = torch.tensor(index, device=mod.weight.device)
    if isinstance(mod, nn.Linear):  # weight (hidden, inter)
        return mod.weight[:, idx].T.detach()
    return mod.weight[idx].detach()  # Conv1D weight (inter, hidden)


@dataclass
class ValueDelta:
    """Add `delta[j]` to the value vector of neuron `index[j]` of `layer` (delta: (k, hidden))."""

    layer: int
    index: list[int]
    delta: torch.Tensor


@contextmanager
def value_deltas(lm: LM, deltas: list[ValueDelta], positions: list[int] | None = None) -> Iterator[None]:
    """Run as if W_out[:, i] += delta_i, by a forward hook that adds m_i · delta_i to the output.

    This is exactly the weight edit (W + ΔW) m = W m + ΔW m, so the shared weights are never
    written. `positions` (absolute, in the sequence) limits it to those positions; None: all."""
    modules = ffn_out_modules(lm)
    by_layer: dict[int, list[ValueDelta]] = {}
    for d in deltas:
        by_layer.setdefault(d.layer, []).append(d)

    def make(group: list[ValueDelta]):
        idx = torch.tensor([i for d in group for i in d.index], device=lm.device)  # (k,)
        delta = torch.cat([d.delta for d in group]).to(lm.device)  # (k, hidden)

        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            m = args[0]  # (batch, seq, inter)
            add = m[..., idx].to(delta.dtype) @ delta  # (batch, seq, hidden)
            if positions is not None:
                keep = torch.zeros(m.shape[-2], dtype=torch.bool, device=m.device)
                keep[[p for p in positions if p < m.shape[-2]]] = True
                add = add * keep[:, None]
            return output + add.to(output.dtype)
        return fn

    with hooks(forward=[(modules[layer], make(group)) for layer, group in by_layer.items()]):
        yield


def scale_deltas(lm: LM, neurons: list[tuple[int, int]], factor: float) -> list[ValueDelta]:
    """Deltas that multiply the neurons' activations by `factor` (0: suppress, 2: enhance)."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(layer, []).append(i)
    return [ValueDelta(layer, idx, (factor - 1.0) * value_vectors(lm, layer, idx).float())
            for layer, idx in sorted(by_layer.items())]


def _prefix_cache(lm: LM, prefix: list[int]):
    """KV cache of the prefix (None when empty); rows reuse deep copies of it."""
    if not prefix:
        return None
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([prefix], device=lm.device), use_cache=True)
    return out.cache


def _expanded(cache, rows: int):
    if cache is None:
        return None
    c = copy.deepcopy(cache)
    c.batch_repeat_interleave(rows)
    return c


@torch.no_grad()
def clean_activations(lm: LM, prefix: list[int], last: int, cache=None) -> tuple[torch.Tensor, torch.Tensor]:
    """m at the last position for every layer, (n_layers, inter), and the next-token probabilities (vocab,)."""
    cache = cache if cache is not None else _prefix_cache(lm, prefix)
    modules = ffn_out_modules(lm)
    with capture_inputs({str(i): m for i, m in enumerate(modules)}) as acts:
        out = lm.model(input_ids=torch.tensor([[last]], device=lm.device), cache=_expanded(cache, 1),
                       use_cache=cache is not None, logits_to_keep=1)
    m = torch.stack([acts[str(i)][0, -1] for i in range(len(modules))])  # (n_layers, inter)
    return m, out.logits[0, -1].float().softmax(-1)


def ffn_integrated_gradients(lm: LM, prefix: list[int], last: int, answer: int, n_steps: int = 20,
                             rule: str = "gausslegendre", layers: list[int] | None = None,
                             progress: Progress = no_progress, rows: int | None = None) -> torch.Tensor:
    """IG of P(answer | prefix + [last]) over the FFN activation at the last position of each layer.

    Returns (n_layers, inter), zero rows for layers not in `layers`. `rows`: batch rows per pass
    (default from `rows_per_batch`)."""
    modules = ffn_out_modules(lm)
    n_layers = len(modules)
    layers = list(range(n_layers)) if layers is None else layers
    cache = _prefix_cache(lm, prefix)
    m_clean, _ = clean_activations(lm, prefix, last, cache)  # (n_layers, inter)
    alphas, weights = quadrature(rule, n_steps)
    # every (layer, step) pair is one row
    row_layer = torch.tensor([lay for lay in layers for _ in range(n_steps)], device=lm.device)  # (R,)
    row_alpha = torch.tensor(alphas * len(layers), device=lm.device, dtype=m_clean.dtype)  # (R,)
    row_weight = torch.tensor(weights * len(layers), device=lm.device, dtype=torch.float32)  # (R,)
    R = len(row_layer)
    per = rows or rows_per_batch(lm, 1 + len(prefix) // 8)  # one token per row, plus its cached prefix
    grads = torch.zeros(n_layers, m_clean.shape[-1], device=lm.device, dtype=torch.float32)  # (n_layers, inter)
    for start in range(0, R, per):
        sl = slice(start, start + per)
        lay, alpha, w = row_layer[sl], row_alpha[sl], row_weight[sl]  # (B,)
        points = (alpha[:, None] * m_clean[lay]).detach().requires_grad_(True)  # (B, inter)

        def make(layer: int):
            mask = (lay == layer)[:, None]  # (B, 1)

            def fn(module: nn.Module, args: tuple):
                m = args[0]  # (B, 1, inter)
                return (torch.where(mask, points, m[:, -1])[:, None], *args[1:])
            return fn

        with hooks(pre=[(modules[layer], make(layer)) for layer in sorted(set(lay.tolist()))]):
            out = lm.model(input_ids=torch.full((len(lay), 1), last, device=lm.device),
                           cache=_expanded(cache, len(lay)), use_cache=cache is not None, logits_to_keep=1)
        prob = out.logits[:, -1].float().softmax(-1)[:, answer]  # (B,)
        (g,) = torch.autograd.grad(prob, points, grad_outputs=w)  # (B, inter), row b: w_b ∂P_b/∂m
        grads.index_add_(0, lay, g.float())
        progress(min(start + per, R) / R)
    return m_clean.float() * grads  # (n_layers, inter)


def answer_steps(prompt_ids: list[int], answer_ids: list[int]) -> list[tuple[list[int], int, int]]:
    """Teacher forcing: for answer token j, (prefix, last input token, token to predict)."""
    seq = prompt_ids + answer_ids
    n = len(prompt_ids)
    return [(seq[: n - 1 + j], seq[n - 1 + j], answer_ids[j]) for j in range(len(answer_ids))]


def fact_attributions(lm: LM, prompt_ids: list[int], answer_ids: list[int], n_steps: int, rule: str,
                      layers: list[int] | None = None, progress: Progress = no_progress) -> torch.Tensor:
    """(n_layers, inter) IG scores for one prompt, averaged over the answer's tokens (teacher-forced)."""
    steps = answer_steps(prompt_ids, answer_ids)
    total = None
    for j, (prefix, last, token) in enumerate(steps):
        span = (j / len(steps), (j + 1) / len(steps))
        ig = ffn_integrated_gradients(lm, prefix, last, token, n_steps, rule, layers,
                                      progress=lambda f: progress(span[0] + (span[1] - span[0]) * f))
        total = ig if total is None else total + ig
    return total / len(steps)
