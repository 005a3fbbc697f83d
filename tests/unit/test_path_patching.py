"""Path patching's identities (every path open = activation patching of the sender; no path open =
the base run) and its direct path to the logits against a computation by hand."""

from __future__ import annotations

import pytest
import torch

from workers.internals.hooks import capture_inputs, hook_count
from workers.patching.exact import Counts, Metric, Patch, base_run, patched_metrics, read_site
from workers.patching.path import Receiver, everything, path_patched_metrics
from workers.patching.sites import site_of

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def setup(lm):
    clean, corrupt = lm.encode(CLEAN).ids, lm.encode(CORRUPT).ids
    metric = Metric(lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0], 7)
    site = site_of(lm, "attn_head")
    layers = list(range(len(lm.layers)))
    counts = Counts()
    base = base_run(lm, corrupt, metric, counts)
    return clean, corrupt, metric, site, base, read_site(lm, site, corrupt, layers, counts), read_site(
        lm, site, clean, layers, counts)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_every_path_open_is_activation_patching_and_none_is_the_base_run(request, model):
    lm = request.getfixturevalue(model)
    clean, corrupt, metric, site, base, z_base, z_clean = setup(lm)
    senders = [(layer, h) for layer in range(len(lm.layers)) for h in range(site.units)]
    counts = Counts()
    open_all = path_patched_metrics(lm, senders, everything(lm), base, z_base, z_clean, metric, counts)
    patched = patched_metrics(lm, site, [Patch(layer, None, h) for layer, h in senders], base, z_clean, metric,
                              Counts())
    assert torch.allclose(open_all, patched, atol=1e-4), (open_all - patched).abs().max()
    closed = path_patched_metrics(lm, senders, [], base, z_base, z_clean, metric, counts)
    assert torch.equal(closed, torch.full_like(closed, base.metric))
    assert hook_count(lm.model) == 0


def test_the_direct_path_to_the_logits_is_the_sender_delta_through_the_final_norm(tiny_llama):
    lm = tiny_llama
    clean, corrupt, metric, site, base, z_base, z_clean = setup(lm)
    senders = [(0, 1), (1, 4), (2, 5)]
    end = len(corrupt) - 1
    got = path_patched_metrics(lm, senders, [Receiver("logits", len(lm.layers), positions=(end,))], base, z_base,
                               z_clean, metric, Counts())
    with torch.no_grad(), capture_inputs({"final": lm.module(lm.arch.final_norm)}) as seen:
        lm.model(input_ids=torch.tensor([corrupt]))
    with torch.no_grad():
        want = []
        for layer, h in senders:
            w_o = lm.layers[layer].self_attn.o_proj.weight.T.reshape(6, 12, -1)[h]  # (head_dim, d)
            delta = (z_clean[layer][end, h] - z_base[layer][end, h]) @ w_o
            logits = lm.model.lm_head(lm.model.model.norm(seen["final"][0, end] + delta))
            want.append(float(logits[metric.answer] - logits[metric.wrong]))
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_a_receiver_restricted_to_the_last_query_runs_only_that_position(tiny_llama):
    lm = tiny_llama
    clean, corrupt, metric, site, base, z_base, z_clean = setup(lm)
    end = len(corrupt) - 1
    counts = Counts()
    q_end = path_patched_metrics(lm, [(0, 0), (0, 3), (1, 2)], [Receiver("q", 2, (0, 4), (end,))], base, z_base,
                                 z_clean, metric, counts)
    assert counts.positions == 3 * 1 * 1  # three senders, one position, one layer (the receivers' layer)
    # q only at END with heads (0, 4) of layer 2 equals q of those heads at every position (keys/values untouched)
    every = path_patched_metrics(lm, [(0, 0), (0, 3), (1, 2)], [Receiver("q", 2, (0, 4))], base, z_base, z_clean,
                                 metric, Counts())
    assert torch.allclose(q_end, every, atol=1e-5)
    assert not torch.allclose(q_end, torch.full_like(q_end, base.metric))
