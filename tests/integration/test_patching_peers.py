"""Lantern's exact `activation_patching` against the peers' own patching on the same model and pair:
TransformerLens 4.x (`transformer_lens.patching.get_act_patch_*` through `TransformerBridge`) and
nnsight (batched invokes), on tiny LLaMA with GQA and on the real SmolLM2-135M (slow). Effects are
normalised the same way on both sides, (patched − corrupted) / (clean − corrupted) on the logit
difference, each from its own clean and corrupted runs; fp32; max difference ≤ 1e-4.

The peers are installed by the Makefile (`$(VENV)/.peers-installed`, --no-deps); without them these
tests skip and say so."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformer_lens", reason="peers not installed: make .venv/.peers-installed")
pytest.importorskip("nnsight", reason="peers not installed: make .venv/.peers-installed")

from bench.patching_peers import (  # noqa: E402
    POSITION_COMPONENTS,
    nnsight_effects,
    nnsight_model,
    one_token,
    tl_bridge,
    tl_effects,
    tl_tqdm_off,
)
from schemas.jobs import JOB_MODELS  # noqa: E402
from workers.context import Context
from workers.internals.hooks import hook_count  # noqa: E402
from workers.methods import activation_patching  # noqa: E402

TOL = 1e-4
TINY = ("When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to")
# SmolLM2: the IOI pair with a third name in the corrupted prompt
IOI = ("When Mary and John went to the store, John gave a drink to",
       "When Mary and John went to the store, Anne gave a drink to")


def lantern(lm, pair, **params) -> torch.Tensor:
    req = JOB_MODELS["activation_patching"](
        kind="activation_patching", model=lm.id,
        input={"clean_prompt": pair[0], "corrupted_prompt": pair[1], "answer": " Mary", "wrong_answer": " John"},
        params=params)
    return torch.tensor(activation_patching.run(lm, req, Context()).effects)


def ids_and_answers(lm, pair):
    clean, corrupt = lm.encode(pair[0]).ids, lm.encode(pair[1]).ids
    assert len(clean) == len(corrupt)
    return clean, corrupt, one_token(lm, " Mary"), one_token(lm, " John")


def all_patches(component: str, grid: torch.Tensor) -> list[tuple[int, int | None, int | None]]:
    """Lantern's grid order as (layer, position, unit) rows for nnsight."""
    L, n = grid.shape[:2]
    if component in POSITION_COMPONENTS:
        return [(layer, pos, None) for layer in range(L) for pos in range(n)]
    return [(layer, None, unit) for layer in range(L) for unit in range(n)]


@pytest.fixture(scope="module")
def tiny_peers(tiny_llama):
    tl_tqdm_off()
    return tl_bridge(tiny_llama), nnsight_model(tiny_llama)


@pytest.fixture(scope="module")
def smollm2_peers(smollm2):
    tl_tqdm_off()
    return tl_bridge(smollm2), nnsight_model(smollm2)


CASES = [("residual", False), ("attn_out", False), ("mlp_out", False), ("attn_head", False), ("attn_head", True),
         ("head_query", False), ("head_key", False), ("head_value", False), ("head_value", True)]


@pytest.mark.parametrize("component,per_position", CASES)
def test_tiny_llama_gqa_equals_transformer_lens(tiny_llama, tiny_peers, component, per_position):
    clean, corrupt, a, b = ids_and_answers(tiny_llama, TINY)
    ours = lantern(tiny_llama, TINY, component=component, per_position=per_position)
    theirs = tl_effects(tiny_peers[0], component, clean, corrupt, a, b, per_position=per_position).effects
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= TOL, (ours - theirs).abs().max()
    assert ours.abs().max() > 0.1 or component in ("head_query", "head_key")  # something moved
    assert hook_count(tiny_llama.model) == 0


@pytest.mark.parametrize("component", ["residual", "attn_head", "head_value", "mlp_out"])
def test_tiny_llama_gqa_equals_nnsight(tiny_llama, tiny_peers, component):
    clean, corrupt, a, b = ids_and_answers(tiny_llama, TINY)
    ours = lantern(tiny_llama, TINY, component=component)
    theirs = nnsight_effects(tiny_peers[1], tiny_llama, component, clean, corrupt, a, b,
                             all_patches(component, ours), rows_per_trace=16).effects
    assert (ours.flatten() - theirs).abs().max() <= TOL, (ours.flatten() - theirs).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("component", ["residual", "attn_head"])
def test_smollm2_equals_transformer_lens(smollm2, smollm2_peers, component):
    import pandas as pd

    clean, corrupt, a, b = ids_and_answers(smollm2, IOI)
    ours = lantern(smollm2, IOI, component=component)
    assert ours.shape == ((30, len(clean)) if component == "residual" else (30, 9))
    # TransformerLens runs one forward per patch (~0.1-1 s each on 2 shared cores): every head, and the
    # residual at every position of every third layer and the last (the whole first and last rows included)
    rows = [(layer, n) for layer in (*range(0, 30, 3), 29) for n in range(ours.shape[1])]
    theirs = tl_effects(smollm2_peers[0], component, clean, corrupt, a, b,
                        index_df=pd.DataFrame(rows, columns=["layer", "pos" if component == "residual" else "head"]))
    want = torch.stack([ours[layer, n] for layer, n in rows])
    assert (want - theirs.effects).abs().max() <= TOL, (want - theirs.effects).abs().max()
    if component == "residual":  # the answer moves from the name positions to the last one
        assert ours[0].abs().max() > 0.5 and ours[-1, -1] > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("component", ["residual", "attn_head"])
def test_smollm2_equals_nnsight(smollm2, smollm2_peers, component):
    clean, corrupt, a, b = ids_and_answers(smollm2, IOI)
    ours = lantern(smollm2, IOI, component=component)
    theirs = nnsight_effects(smollm2_peers[1], smollm2, component, clean, corrupt, a, b,
                             all_patches(component, ours), rows_per_trace=64).effects
    assert (ours.flatten() - theirs).abs().max() <= TOL, (ours.flatten() - theirs).abs().max()
    assert hook_count(smollm2.model) == 0
