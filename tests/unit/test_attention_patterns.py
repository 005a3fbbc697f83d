"""The pattern classifier on synthetic maps of each class (encoder and causal masks), segments,
and the kind end to end on tiny models."""

from __future__ import annotations

import pytest
import torch

from schemas.jobs import parse_job
from tests.tiny import tiny_bert, tiny_llama
from workers.context import Context
from workers.errors import BadInput
from workers.methods import attention_patterns as ap

N = 32


def normalise(scores: torch.Tensor, causal: bool) -> torch.Tensor:
    if causal:
        scores = scores.tril()
    return scores / scores.sum(-1, keepdim=True)


def background(causal: bool) -> torch.Tensor:
    return normalise(torch.ones(N, N), causal)


def vertical(causal: bool) -> torch.Tensor:  # [CLS]/BOS and [SEP]-like stripes
    m = torch.zeros(N, N)
    m[:, 0] = 0.6
    if not causal:
        m[:, N - 1] = 0.3
    else:
        m[:, 0] = 0.9
    return 0.9 * normalise(m + 1e-9, causal) + 0.1 * background(causal)


def diagonal(causal: bool) -> torch.Tensor:  # previous token (or next, for an encoder)
    m = torch.zeros(N, N)
    i = torch.arange(N)
    m[i, (i - 1).clamp_min(0)] = 1.0
    if not causal:
        m[i, (i + 1).clamp_max(N - 1)] += 0.5
    return 0.9 * normalise(m, causal) + 0.1 * background(causal)


def vertical_diagonal(causal: bool) -> torch.Tensor:
    return 0.5 * vertical(causal) + 0.5 * diagonal(causal)


def block(causal: bool) -> torch.Tensor:  # uniform within each of two sentences
    seg = (torch.arange(N) >= N // 2).long()
    same = (seg[:, None] == seg[None, :]).float()
    return normalise(same, causal)


def heterogeneous(causal: bool) -> torch.Tensor:  # random rows
    torch.manual_seed(1)
    return normalise(torch.distributions.Dirichlet(torch.ones(N)).sample((N,)), causal)


SYNTHETIC = {"vertical": vertical, "diagonal": diagonal, "vertical+diagonal": vertical_diagonal, "block": block,
             "heterogeneous": heterogeneous}
SEGMENTS = (torch.arange(N) >= N // 2).long()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("expected", list(SYNTHETIC))
def test_synthetic_maps_get_their_class(expected, causal):
    alpha = SYNTHETIC[expected](causal)[None]  # (1, N, N)
    assert torch.allclose(alpha.sum(-1), torch.ones(1, N))
    feats = ap.features(alpha, causal, SEGMENTS)
    got = ap.classify({k: float(v[0]) for k, v in feats.items()})
    assert got == expected, {k: round(float(v[0]), 3) for k, v in feats.items()}


def test_uniform_attention_is_heterogeneous_for_any_length():
    for n in (4, 7, 64):
        for causal in (False, True):
            visible = torch.ones(n, n).tril() if causal else torch.ones(n, n)
            feats = ap.features((visible / visible.sum(-1, keepdim=True))[None], causal, None)
            assert all(abs(float(v[0])) < 1e-6 for v in feats.values())
            assert ap.classify({**{k: float(v[0]) for k, v in feats.items()}, "block": None}) == "heterogeneous"


def test_segments_split_sentences_and_need_two():
    lm = tiny_bert()
    two = lm.encode("The quick brown fox jumps. Hello world, this is a tiny tokenizer!")
    seg = ap.segments(lm, two)
    assert seg is not None and seg.max() >= 1 and seg[0] == 0
    assert ap.segments(lm, lm.encode("The quick brown fox jumps")) is None


def request(prompts, params=None):
    return parse_job({"kind": "attention_patterns", "model": "m", "input": {"prompts": prompts},
                      "params": params or {}})


@pytest.mark.parametrize("build", [tiny_llama, tiny_bert])
def test_run_classifies_every_selected_head(build):
    lm = build()
    prompts = ["When Mary and John went to the store, John gave a drink to Mary.",
               "The capital of France is Paris. The capital of Italy is Rome.",
               "Two plus two is four. Three plus three is six."]
    res = ap.run(lm, request(prompts, {"layers": [-1], "heads": [0, 2]}), Context())
    assert res.n_prompts == 3 and res.layers == [len(lm.layers) - 1] and res.heads == [0, 2]
    assert len(res.grid) == 1 and len(res.grid[0]) == 2 and len(res.patterns) == 2
    assert sum(res.distribution.values()) == pytest.approx(1.0) and set(res.distribution) == set(ap.PATTERNS)
    for p in res.patterns:
        assert sum(p.votes.values()) == 3 and p.votes.get(p.pattern) == max(p.votes.values())
    assert res.thresholds == ap.THRESHOLDS


def test_too_short_prompt_is_bad_input():
    with pytest.raises(BadInput):
        ap.run(tiny_llama(), request(["Hi"]), Context())
