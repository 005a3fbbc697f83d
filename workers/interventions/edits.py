"""Knowledge edit sets (Dai et al. 2022, §5): stored value-vector deltas, applied by hooks per job.

An edit set holds, for each edited neuron (layer l, index i), a delta δ for its value vector
v_i = W_out[:, i]. A job that names it (`edits: [id]` on generate, attribution, logit_lens) runs
with W_out[:, i] + δ through `workers.internals.ffn.value_deltas`: a forward hook on the FFN output
projection adds m_i · δ to its output, which equals the weight edit. The shared weights are never
written, so one tenant's edit cannot leak into another's job, and every hook comes off when the job's
block exits (normally or by an exception). Several edit sets compose by summing their deltas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from common.artifacts import ArtifactStore
from workers.errors import BadInput
from workers.internals.ffn import ValueDelta, ffn_out_modules, n_neurons, value_deltas
from workers.models.loading import LM

ARTIFACT_KIND = "edits"


def to_data(deltas: list[ValueDelta]) -> list[dict]:
    """JSON form of the deltas: one entry per neuron, the delta as a list of floats."""
    return [{"layer": d.layer, "index": i, "delta": row.tolist()}
            for d in deltas for i, row in zip(d.index, d.delta.float().cpu())]


def from_data(lm: LM, entries: list[dict], edit_id: str = "") -> list[ValueDelta]:
    n_layers, width = len(ffn_out_modules(lm)), n_neurons(lm)
    hidden = lm.facts()["hidden_size"]
    out = []
    for e in entries:
        layer, index, delta = int(e["layer"]), int(e["index"]), e["delta"]
        if not (0 <= layer < n_layers and 0 <= index < width and len(delta) == hidden):
            raise BadInput(f"edit set {edit_id!r} does not fit model {lm.id!r}")
        out.append(ValueDelta(layer, [index], torch.tensor([delta], dtype=torch.float32, device=lm.device)))
    return out


def load(lm: LM, edit_ids: list[str], store: ArtifactStore) -> list[ValueDelta]:
    """All deltas of the named edit sets (the owner's, for this model; else BadInput)."""
    deltas: list[ValueDelta] = []
    for edit_id in edit_ids:
        view = store.get(ARTIFACT_KIND, edit_id, lm.id)
        deltas += from_data(lm, view.data["deltas"], edit_id)
    return deltas


@contextmanager
def apply(lm: LM, edit_ids: list[str], store: ArtifactStore) -> Iterator[None]:
    """The `edits` applier: every named edit set in force for the block, none after it."""
    deltas = load(lm, edit_ids, store)  # fail before any hook is installed
    with value_deltas(lm, deltas):
        yield
