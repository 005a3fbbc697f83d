"""What the dissection methods read inside a forward pass, for every family in `architectures.py`.

- attention weights α: the attention module returns them under eager attention (`eager_attention`);
- values and each query head's slice of the output projection, so f_h(x_j) = (x_j W_V + b_V) W_O^h
  (Kobayashi et al. 2020) under grouped-query attention too (`head_value_vectors`);
- FFN coefficients and value vectors (Geva et al. 2022): the input of the FFN output projection and
  the rows of its (in, out) weight;
- residual-stream sites and the lens that reads them in the vocabulary.

Projections are read as (in, out) matrices: `nn.Linear` stores (out, in), GPT-2's `Conv1D` (in, out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from workers.internals.hooks import hooks
from workers.models.loading import LM


@contextmanager
def eager_attention(lm: LM) -> Iterator[None]:
    """Run with eager attention, the implementation that returns α; restore the previous one after.

    Jobs run one at a time in a worker, so switching the shared model for one job is safe; SDPA and
    flash kernels never materialise α."""
    before = lm.config._attn_implementation
    if before != "eager":
        lm.model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            lm.model.set_attn_implementation(before)


def forward(lm: LM, ids: list[int]) -> None:
    """One forward of a single unpadded sequence; hooks read what they need (no logits kept but one)."""
    input_ids = torch.tensor([ids], device=lm.device)  # (1, n)
    kwargs = {"use_cache": False, "logits_to_keep": 1} if lm.spec.task == "causal_lm" else {}
    lm.model(input_ids=input_ids, **kwargs)


def in_out_weight(module: nn.Module) -> torch.Tensor:
    """A projection's weight as an (in, out) matrix: x @ W (+ b) is its output."""
    if isinstance(module, nn.Linear):
        return module.weight.T
    if type(module).__name__ == "Conv1D":  # GPT-2
        return module.weight
    raise TypeError(f"not a projection: {type(module).__name__}")


def kv_head_of(lm: LM) -> torch.Tensor:
    """(H,) the KV head each query head reads: h // (n_heads // n_kv_heads), HF's `repeat_kv` layout."""
    heads, kv = lm.n_heads, lm.n_kv_heads
    return torch.arange(heads) // (heads // kv)


def head_out_weights(lm: LM, layer: int) -> torch.Tensor:
    """W_O^h for every query head, (H, head_dim, d): head h's rows of the (in, out) output projection."""
    heads = lm.n_heads
    w = in_out_weight(lm.layers[layer].get_submodule(lm.arch.attn_out))  # (H*head_dim, d)
    return w.reshape(heads, lm.head_dim, w.shape[-1])


def values_from(lm: LM, v_out: torch.Tensor) -> torch.Tensor:
    """(1, n, out) output of `arch.v_proj` -> (n, n_kv, head_dim) value vectors x W_V + b_V."""
    kv = lm.n_kv_heads
    v = v_out[0]
    if lm.arch.qkv_fused:
        v = v[..., -kv * lm.head_dim:]
    return v.reshape(v.shape[0], kv, lm.head_dim)


def head_value_vectors(lm: LM, layer: int, v: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
    """f_h(x_j) = v_{kv(h), j} W_O^h for the query heads `heads` (default all), (len(heads), n, d), fp32.

    b_O is not part of it (Kobayashi et al. 2020): Σ_h Σ_j α_hij f_h(x_j) + b_O is the attention output."""
    w_o = head_out_weights(lm, layer).float()  # (H, head_dim, d)
    kv = kv_head_of(lm).to(v.device)  # (H,)
    if heads is not None:
        w_o, kv = w_o[heads], kv[heads]
    return torch.einsum("jhe,hed->hjd", v.float()[:, kv, :], w_o)  # (h, n, d)


@contextmanager
def attention_parts(lm: LM, layers: list[int], on_layer: Callable[[int, torch.Tensor, torch.Tensor | None], None],
                    with_values: bool = True) -> Iterator[None]:
    """Within the block, every forward calls `on_layer(layer, alpha, v)` for each layer in `layers`
    as soon as that layer's attention has run: alpha (H, n, n) per query head, v (n, n_kv, head_dim)
    or None. Only one layer's maps are alive at a time; the caller keeps what it reduces them to."""
    values: dict[int, torch.Tensor] = {}

    def keep_values(i: int):
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            values[i] = values_from(lm, output)
        return fn

    def read_alpha(i: int):
        def fn(module: nn.Module, args: tuple, output: tuple) -> None:
            alpha = output[1]
            if alpha is None:
                raise RuntimeError("the attention module returned no weights: eager attention is off")
            on_layer(i, alpha[0], values.pop(i, None))
        return fn

    forward_hooks = [(lm.layers[i].get_submodule(lm.arch.attn), read_alpha(i)) for i in layers]
    if with_values:
        forward_hooks = [(lm.layers[i].get_submodule(lm.arch.v_proj), keep_values(i)) for i in layers] + forward_hooks
    with eager_attention(lm), hooks(forward=forward_hooks):
        yield


# -- residual stream and the vocabulary -------------------------------------------------------------
def residual_hooks(lm: LM, layers: list[int], sites: tuple[str, ...], store: dict[tuple[str, int], torch.Tensor],
                   positions: list[int] | None = None):
    """Forward and pre-hooks that put the residual stream at `sites` of `layers` into store[(site, layer)],
    (len(positions), d) for the single sequence of the forward.

    resid_post: the block's output. resid_mid: after the attention sublayer, i.e. the input of the
    pre-MLP norm (pre-LN) or the output of the attention sublayer's LayerNorm (post-LN, BERT)."""
    pos = slice(None) if positions is None else torch.tensor(positions, device=lm.device)

    def put(key: tuple[str, int], t: torch.Tensor) -> None:
        store[key] = t[0, pos].detach()

    def post(i: int):
        def fn(module, args, output):
            put(("resid_post", i), output[0] if isinstance(output, tuple) else output)
        return fn

    def mid_in(i: int):
        def fn(module, args):
            put(("resid_mid", i), args[0])
        return fn

    def mid_out(i: int):
        def fn(module, args, output):
            put(("resid_mid", i), output)
        return fn

    forward_hooks, pre_hooks = [], []
    for i in layers:
        block = lm.layers[i]
        if "resid_post" in sites:
            forward_hooks.append((block, post(i)))
        if "resid_mid" in sites:
            if lm.arch.post_norm:
                forward_hooks.append((block.get_submodule(lm.arch.attn_norm), mid_out(i)))
            else:
                pre_hooks.append((block.get_submodule(lm.arch.mlp_norm), mid_in(i)))
    return hooks(forward=forward_hooks, pre=pre_hooks)


def unembedding(lm: LM) -> tuple[torch.Tensor, str]:
    """(V, d) vocabulary matrix and its name: the LM head, or for an encoder loaded without one the
    input embeddings (BERT's MLM decoder is tied to them; its transform head is not applied)."""
    if lm.arch.unembed is not None and _has(lm, lm.arch.unembed):
        return lm.module(lm.arch.unembed).weight, "lm_head"
    return lm.embed.weight, "input_embeddings"


def _has(lm: LM, path: str) -> bool:
    try:
        lm.module(path)
    except AttributeError:
        return False
    return True


def lens_logits(lm: LM, h: torch.Tensor) -> torch.Tensor:
    """Residual states (.., d) -> vocabulary logits (.., V), fp32: the final norm applied to these
    states themselves (its scale recomputed, not the last layer's) and the unembedding. On the last
    layer's output this is exactly the model's own logits. Post-LN encoders: every block output is
    already normalised, so the states go straight to the unembedding."""
    if lm.arch.final_norm is not None and not lm.arch.post_norm:
        h = lm.module(lm.arch.final_norm)(h)
    if lm.arch.unembed is not None and _has(lm, lm.arch.unembed):
        return lm.module(lm.arch.unembed)(h).float()
    return (h @ lm.embed.weight.T).float()


def direction_logits(lm: LM, layer: int, vectors: torch.Tensor) -> torch.Tensor:
    """Directions written into the residual stream (k, d) -> vocabulary logits (k, V), fp32.

    The norm's scale γ is applied (and its centring, for LayerNorm), not its data-dependent division
    nor its bias: U (γ ⊙ v). Pre-LN models use the final norm; post-LN (BERT) the layer's own output
    LayerNorm, which is the norm this write goes through next."""
    norm = lm.layers[layer].get_submodule(lm.arch.mlp_norm) if lm.arch.post_norm else (
        lm.module(lm.arch.final_norm) if lm.arch.final_norm else None)
    v = vectors.float()
    if norm is not None:
        if isinstance(norm, nn.LayerNorm):
            v = v - v.mean(-1, keepdim=True)
        v = v * norm.weight.float()
    u, _ = unembedding(lm)
    return v @ u.float().T
