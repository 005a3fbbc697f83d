"""Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial
Scale"; AtP, Kramár et al. 2024): the first-order estimate of every patch at once,

    metric(base with a ← a_source) − metric(base) ≈ (a_source − a_base) · ∂metric/∂a |_base,

from one forward of the source (read), one forward and one backward of the base. The gradient at a
component is the total derivative (every downstream path), taken on clones the hooks hand back in
the components' places, so the model's own tensors stay untouched. AtP's refinements (QK fix for
attention saturation, GradDrop) are not applied; the job's `verify_top_k` shows where the linear
estimate fails by re-running the largest estimates exactly.
"""

from __future__ import annotations

import torch

from workers.internals.hooks import hooks
from workers.models.loading import LM
from workers.patching.exact import Counts, Metric, Patch, body, n_layers
from workers.patching.sites import Site, site_hooks


def estimates(lm: LM, site: Site, patches: list[Patch], ids: list[int], source: dict[int, torch.Tensor],
              metric: Metric, counts: Counts) -> tuple[torch.Tensor, float]:
    """(len(patches),) first-order metric changes, and the base run's metric."""
    layers = sorted({p.layer for p in patches})
    acts: dict[int, torch.Tensor] = {}

    def keep(layer: int, a: torch.Tensor) -> torch.Tensor:
        acts[layer] = a.clone()  # (1, T, units, width), on the graph in the component's place
        return acts[layer]

    def leaf(module, args, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)  # the weights take no gradient: start the graph here

    forward, pre = site_hooks(lm, site, layers, keep)
    with torch.enable_grad(), hooks(forward=[(lm.embed, leaf), *forward], pre=pre):
        h = body(lm)(input_ids=torch.tensor([ids], device=lm.device), use_cache=False).last_hidden_state
        value = metric.of_hidden(lm, h[:, -1])  # (1,)
        grads = torch.autograd.grad(value.sum(), [acts[layer] for layer in layers])
    counts.forwards += 2  # the backward costs about one more forward
    counts.positions += 2 * len(ids) * n_layers(lm)
    counts.naive += 2 * len(ids) * n_layers(lm)
    # (T, units): the estimate of patching one unit at one position
    per_cell = {layer: ((source[layer].float() - acts[layer][0].detach().float()) * g[0].float()).sum(-1)
                for layer, g in zip(layers, grads)}
    out = torch.empty(len(patches))
    for k, p in enumerate(patches):
        cells = per_cell[p.layer]
        cells = cells if p.position is None else cells[p.position:p.position + 1]
        cells = cells if p.unit is None else cells[:, p.unit]
        out[k] = cells.sum().cpu()
    return out, float(value.detach()[0])
