"""How many token positions one forward+backward may carry, so batches fit the device, and what a
forward costs beyond its positions."""

from __future__ import annotations

import torch

from common.settings import ProcessSettings
from workers.models.loading import LM

# A forward costs about `overhead + positions` position-units: on the CPU every forward streams all
# the weights, a fixed cost of some tens of positions; on a GPU an eager forward is launch-bound
# whatever the batch, so batches should be full (measurements: docs/patching.md, "Cost").
FORWARD_OVERHEAD_POSITIONS = {"cpu": 32, "cuda": 8192}

# CPU default: a few GB of saved activations on SmolLM2-sized models (30 layers).
DEFAULT_CPU_BATCH_TOKENS = 2048


def batch_tokens(lm: LM, with_grad: bool = True) -> int:
    """Token positions per batch: `LANTERN_BATCH_TOKENS` if set, else sized from free memory."""
    if configured := ProcessSettings().batch_tokens:
        return configured
    if lm.device.type != "cuda":
        return DEFAULT_CPU_BATCH_TOKENS * (1 if with_grad else 4)
    free, _ = torch.cuda.mem_get_info(lm.device)
    facts = lm.facts()
    elem = torch.finfo(lm.dtype).bits // 8
    # saved activations per token and layer: ~12 hidden-sized and ~4 FFN-sized tensors, plus the
    # fp32 logits of the kept positions (small: logits only where a target is read).
    per_token = facts["n_layers"] * (12 * facts["hidden_size"] + 4 * facts["intermediate_size"]) * elem
    if not with_grad:
        per_token //= 6
    return max(1, int(0.6 * free / per_token))


def rows_per_batch(lm: LM, seq_len: int, with_grad: bool = True) -> int:
    return max(1, batch_tokens(lm, with_grad) // max(1, seq_len))


def forward_overhead(lm: LM) -> int:
    """The fixed cost of one forward, in token positions (`LANTERN_FORWARD_OVERHEAD` overrides)."""
    if (configured := ProcessSettings().forward_overhead) is not None:
        return configured
    return FORWARD_OVERHEAD_POSITIONS.get(lm.device.type, FORWARD_OVERHEAD_POSITIONS["cpu"])
