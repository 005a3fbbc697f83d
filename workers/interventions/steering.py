"""Steered inference: apply a stored ITI steering profile for the duration of one job.

Li et al. 2023 (ITI), eq. 2: x_{l+1} = x_l + Σ_h Q_l^h (Att_l^h(P_l^h x_l) + α σ_l^h θ_l^h), i.e.
α·σ·θ is added to the output of each selected head before the attention output projection. The
hook is a forward pre-hook on `arch.attn_out` (o_proj on LLaMA) that adds one precomputed
(heads × head_dim,) vector per layer, zero outside the selected heads' slices, to every position
of every row of the batch.

Where this differs from the reference code (`honest_llama`, `lt_modulated_vector_add` with
baukit's `TraceDict(edit_output=...)`): the reference edits the last position of each forward
by default (`start_edit_location='lt'`), and batched use of it is reported (issue 5) to steer
only row 0; here every position of every row is steered, the prompt included, so a batch of
prompts, a KV-cached decode and a single teacher-forced forward all see the same intervention,
and α = 0 is exactly the unsteered model (x + 0 = x). Weights never change: the hooks come off
when the job's block exits, normally or by an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from common.artifacts import ArtifactStore
from workers.errors import BadInput
from workers.internals.hooks import hooks
from workers.models.loading import LM

ARTIFACT_KIND = "steering-profiles"


def check_profile(lm: LM, data: dict[str, Any], profile_id: str = "") -> None:
    """The profile's shape must match the model (same id is checked by the store; this guards a
    model id re-pointed at other weights)."""
    heads = lm.n_heads
    want = {"n_layers": lm.n_layers, "n_heads": heads, "head_dim": lm.head_dim}
    got = {k: data.get(k) for k in want}
    if got != want:
        raise BadInput(f"steering profile {profile_id!r} has shape {got}, model {lm.id} has {want}")
    for h in data["heads"]:
        if not (0 <= h["layer"] < want["n_layers"] and 0 <= h["head"] < heads and len(h["direction"]) == want["head_dim"]):
            raise BadInput(f"steering profile {profile_id!r} names head {h['layer']}.{h['head']} outside model {lm.id}")


def layer_vectors(lm: LM, data: dict[str, Any], alpha: float) -> dict[int, torch.Tensor]:
    """layer -> the (heads × head_dim,) vector added to that layer's attn_out input: α·σ·θ in each
    selected head's slice, 0 elsewhere."""
    heads, hd = lm.n_heads, lm.head_dim
    vectors: dict[int, torch.Tensor] = {}
    for h in data["heads"]:
        v = vectors.setdefault(h["layer"], torch.zeros(heads * hd, dtype=torch.float32))  # (heads*head_dim,)
        theta = torch.tensor(h["direction"], dtype=torch.float32)  # (head_dim,)
        v[h["head"] * hd : (h["head"] + 1) * hd] += alpha * h["sigma"] * theta
    return {l: v.to(device=lm.device, dtype=lm.dtype) for l, v in vectors.items()}


@contextmanager
def steered(lm: LM, vectors: dict[int, torch.Tensor]) -> Iterator[None]:
    """Add `vectors[l]` to the input of layer l's attention output projection while the block runs."""

    def make(v: torch.Tensor):
        def pre(module: torch.nn.Module, args: tuple) -> tuple:
            return (args[0] + v, *args[1:])  # (batch, seq, heads*head_dim) + (heads*head_dim,)
        return pre

    with hooks(pre=[(lm.layers[l].get_submodule(lm.arch.attn_out), make(v)) for l, v in sorted(vectors.items())]):
        yield


@contextmanager
def apply(lm: LM, ref: Any, store: ArtifactStore) -> Iterator[None]:
    """The `steering` applier (`workers.interventions.applied.APPLIERS["steering"]`): `ref` is a SteeringRef."""
    view = store.get(ARTIFACT_KIND, ref.profile_id, lm.id)  # BadInput (422): missing, foreign, other model
    check_profile(lm, view.data, ref.profile_id)
    with steered(lm, layer_vectors(lm, view.data, ref.alpha)):
        yield
