"""Attention probabilities as a tensor a job can read, differentiate and edit (Wang et al. 2023).

The label-words analysis needs, per layer, the attention probabilities A (batch, heads, queries,
keys) as they enter A·V: to take ∂L/∂A (saliency), to read the target row (the deep-layer AUC) and
to rescale the target's attention on label words (anchor re-weighting). Eager attention returns A
but offers no place to change it before A·V, so for the duration of a block the model runs with
`lantern_anchors`, an attention implementation registered with transformers that calls the family's
own eager function (scaling, masks, GPT-2's layer-index scaling unchanged), then:

- `edit(layer, A, q0) -> A'` (optional): the probabilities the layer really uses; when it returns a
  new tensor the output is recomputed as A'·V (keys/values already include any KV cache);
- `observe(layer, A')` (optional): sees the probabilities used, still in the autograd graph.

`q0` is the absolute position of the first query row (the KV-cache length: 0 for a full forward),
so an edit can address absolute positions. Outside `anchored(...)` the implementation is not
selected; inside, jobs run one at a time per worker, as for `eager_attention`.

This is the reference code's `AttentionAdapter` (lancopku/label-words-are-anchors,
icl/analysis/attentioner_for_attribution.py), which multiplies GPT-2's post-softmax weights by a
parameter, written for any family in `workers/models/architectures.py` without patching a module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from workers.errors import BadInput
from workers.models.loading import LM

IMPLEMENTATION = "lantern_anchors"

Edit = Callable[[int, torch.Tensor, int], torch.Tensor]
Observe = Callable[[int, torch.Tensor], None]


@dataclass
class _Session:
    layer_of: dict[int, int]  # id(attention module) -> layer index
    edit: Edit | None
    observe: Observe | None


_session: ContextVar[_Session | None] = ContextVar("anchors_session", default=None)


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (B, H, q, d); key/value (B, H_kv, k, d), the cache included. Returns ((B, q, H, d), A')."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, A = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    session = _session.get()
    if session is None or id(module) not in session.layer_of:
        return out, A
    layer = session.layer_of[id(module)]
    if session.edit is not None:
        q0 = key.shape[-2] - query.shape[-2]
        edited = session.edit(layer, A, q0)  # (B, H, q, k)
        if edited is not A:
            v = value.repeat_interleave(A.shape[1] // value.shape[1], dim=1)  # (B, H, k, d): HF repeat_kv layout
            out = torch.matmul(edited.to(v.dtype), v).transpose(1, 2).contiguous()
            A = edited
    if session.observe is not None:
        session.observe(layer, A)
    return out, A


AttentionInterface.register(IMPLEMENTATION, _attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


@contextmanager
def anchored(lm: LM, edit: Edit | None = None, observe: Observe | None = None) -> Iterator[None]:
    """Run the block's forwards with `edit`/`observe` on every layer's attention probabilities;
    the previous attention implementation and no session are restored after, even on an error."""
    before = lm.config._attn_implementation
    layer_of = {id(block.get_submodule(lm.arch.attn)): i for i, block in enumerate(lm.layers)}
    token = _session.set(_Session(layer_of, edit, observe))
    lm.model.set_attn_implementation(IMPLEMENTATION)
    try:
        yield
    finally:
        lm.model.set_attn_implementation(before)
        _session.reset(token)


def reweight_edit(beta: torch.Tensor, cols: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor,
                  renormalize: bool = False) -> Edit:
    """The edit of eq. 8: in each layer l, row `targets[b]` (absolute) of every head h, the attention
    on label word j (absolute column `cols[m]`, class `classes[m]`) × exp(β[l, h, class]).

    beta (L, H, C); cols, classes (m,); targets (B,). Rows whose target is not in this forward's
    queries (a later decode step) are left alone."""
    def edit(layer: int, A: torch.Tensor, q0: int) -> torch.Tensor:  # A: (B, H, q, k)
        rows = targets - q0  # (B,)
        inside = (rows >= 0) & (rows < A.shape[2])
        if not bool(inside.any()):
            return A
        b = torch.nonzero(inside).flatten()
        r = rows[b]
        scale = torch.exp(beta[layer][:, classes]).to(A.dtype)  # (H, m)
        row = A[b, :, r]  # (b, H, k)
        row = row.index_copy(2, cols, row[:, :, cols] * scale)
        if renormalize:
            row = row / row.sum(-1, keepdim=True)
        out = A.clone()
        out[b, :, r] = row
        return out
    return edit


# -- the `anchors` intervention of later jobs (generate, attribution, logit_lens) ------------------
ARTIFACT_KIND = "anchors"


def find_positions(ids: list[int], slot_ids: list[int], label_ids: list[int]) -> tuple[list[int], list[int], int | None]:
    """In one token sequence: the demonstrations' label words (a label word's first token right after
    the slot's tokens, "iment" ":"), their classes, and the target: the end of the last slot, the
    position whose next token is the answer (a label word there, as in an attribution of the answer,
    is the answer, not a demonstration). As the reference finds `class_poss` by the two tokens before
    the label word (`Predictor.prefix_idxs`)."""
    k = len(slot_ids)
    ends = [t for t in range(k - 1, len(ids)) if ids[t - k + 1:t + 1] == slot_ids]
    if not ends:
        return [], [], None
    target = ends[-1]
    cols, classes = [], []
    for t in ends[:-1]:
        if t + 1 < len(ids) and ids[t + 1] in label_ids:
            cols.append(t + 1)
            classes.append(label_ids.index(ids[t + 1]))
    return cols, classes, target


def check_anchors(lm: LM, data: dict, anchors_id: str = "") -> None:
    heads = lm.facts()["n_heads"]
    if data.get("n_layers") != len(lm.layers) or data.get("n_heads") != heads:
        raise BadInput(f"anchors {anchors_id!r} were learnt for {data.get('n_layers')} layers × {data.get('n_heads')} "
                       f"heads; model {lm.id} has {len(lm.layers)} × {heads}")


@contextmanager
def reweighted(lm: LM, beta: torch.Tensor, slot_ids: list[int], label_ids: list[int],
               renormalize: bool = False) -> Iterator[None]:
    """Every forward in the block re-weights its target's attention on the label words by exp(β).

    The token sequence is read where the job gives it: `input_ids` of a forward that starts at
    position 0 (no cache, or an empty one), or the ids a method embeds itself before forwarding
    `inputs_embeds` (attribution). Forwards continuing a cache (decoding, shared prefixes) keep the
    positions of their sequence; a decode step past the target is left alone (the paper re-weights
    the prediction of the label only). β: (L, H, C)."""
    state: dict = {"cols": None, "classes": None, "target": None, "in_forward": False}

    def locate(ids: torch.Tensor, keep_if_none: bool = False) -> None:
        """ids (B, n) or (n,): the first row's positions serve every row of the batch."""
        if ids.dim() == 0:
            return
        row = ids.reshape(-1, ids.shape[-1])[0].tolist()
        cols, classes, target = find_positions(row, slot_ids, label_ids)
        if target is None and keep_if_none:  # a method embedding something else (a baseline token)
            return
        state.update(cols=torch.tensor(cols, dtype=torch.long, device=lm.device),
                     classes=torch.tensor(classes, dtype=torch.long, device=lm.device), target=target)

    def model_pre(module, args, kwargs):
        state["in_forward"] = True
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        empty = cache is None or cache.get_seq_length() == 0
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and empty:
            locate(ids)

    def model_post(module, args, output):
        state["in_forward"] = False

    def embed_pre(module, args):
        if not state["in_forward"]:
            locate(args[0], keep_if_none=True)

    def edit(layer: int, A: torch.Tensor, q0: int) -> torch.Tensor:
        if state["target"] is None or state["cols"] is None or not len(state["cols"]):
            return A
        targets = torch.full((A.shape[0],), state["target"], device=A.device)
        return reweight_edit(beta, state["cols"], state["classes"], targets, renormalize)(layer, A, q0)

    handles = []
    try:
        handles.append(lm.model.register_forward_pre_hook(model_pre, with_kwargs=True))
        handles.append(lm.model.register_forward_hook(model_post, always_call=True))
        handles.append(lm.embed.register_forward_pre_hook(embed_pre))
        with anchored(lm, edit=edit):
            yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def apply(lm: LM, ref, store) -> Iterator[None]:
    """The `anchors` applier (`workers.interventions.applied.APPLIERS["anchors"]`): `ref` is an AnchorsRef."""
    view = store.get(ARTIFACT_KIND, ref.anchors_id, lm.id)  # BadInput (422): missing, foreign, other model
    data = view.data
    check_anchors(lm, data, ref.anchors_id)
    beta = ref.scale * torch.tensor(data["beta"], dtype=torch.float32, device=lm.device)  # (L, H, C)
    with reweighted(lm, beta, list(data["slot_token_ids"]), list(data["label_token_ids"]), bool(data["renormalize"])):
        yield
