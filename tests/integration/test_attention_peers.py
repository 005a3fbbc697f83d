"""Lantern's `attention` kind against the real TransformerLens (4.x `TransformerBridge` around a
copy of the same HF model, as bench/patching_peers.py boots it): the weights and the Kobayashi et al.
norms, per head and summed over heads, as a TransformerLens user computes them from
`run_with_cache` (bench/bench_attention_peers.py `tl_norms`), on a tiny LLaMA with grouped-query
attention and on the bundled SmolLM2-135M, every layer and head. Numbers only; the timing is the
benchmark's.

TransformerLens is installed by the Makefile (`$(VENV)/.peers-installed`, --no-deps); without it
these tests skip and say so."""

from __future__ import annotations

import pytest

pytest.importorskip("transformer_lens", reason="peers not installed: make .venv/.peers-installed")

from bench.bench_attention_peers import MEASURES, kind_maps, lantern_kind, max_diffs, tl_norms  # noqa: E402
from bench.patching_peers import tl_bridge  # noqa: E402

TEXT = "When Mary and John went to the store, John gave a drink to Mary. The weather was warm."


def check(lm, text):
    ours = kind_maps(lantern_kind(lm, text))
    theirs = tl_norms(tl_bridge(lm), lm.encode(text).ids)
    assert sorted(ours) == sorted(theirs) == list(range(len(lm.layers)))
    for layer in ours:
        for m in MEASURES:
            assert ours[layer][m].shape == theirs[layer][m].shape, (layer, m)
    d = max_diffs(ours, theirs)
    assert d["weights"] <= 1e-6, d
    for m in ("norms", "summed_norms"):  # float32 sums of up to 576-wide products: relative 1e-6
        assert d[m] <= 1e-6 * d[f"max_{m}"] + 1e-6, d
    assert d["max_summed_norms"] > 0.1  # something was compared


def test_tiny_llama_gqa_equals_transformer_lens(tiny_llama):
    check(tiny_llama, TEXT)


@pytest.mark.slow
def test_smollm2_equals_transformer_lens(smollm2):
    check(smollm2, TEXT)
