"""Activation collection equals single-example forwards; probes find a planted direction; folds
are seeded, stratified and keep groups together."""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from schemas.jobs import parse_job
from schemas.kinds.probe import SplitParams
from schemas.limits import Limits
from workers.context import Context
from workers.errors import BadInput
from workers.internals.activations import collect
from workers.internals.hooks import capture_inputs, capture_outputs, hook_count, hooks
from workers.methods import probe

WORDS = ("the capital of France is Paris Italy Rome two plus four six quick brown fox jumps over lazy dog "
         "hello world this tiny tokenizer knows few words Mary John went store gave drink").split()


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts: set[str] = set()
    while len(texts) < n:
        texts.add(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))))
    return sorted(texts)


@contextmanager
def planted(lm, marked: set[tuple[int, ...]], layer: int, head: int, vector: torch.Tensor):
    """Shift head `head` of `layer` (the attn_out input slice) by `vector` at every position of the
    rows whose unpadded token ids are in `marked` (class A); other rows are untouched."""
    hd = vector.numel()
    current: dict[str, torch.Tensor] = {}

    def record(module, args, kwargs):
        ids = kwargs["input_ids"]
        mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        current["rows"] = torch.tensor([tuple(r[m.bool()].tolist()) in marked for r, m in zip(ids, mask)])

    def shift(module, args):
        x = args[0].clone()  # (batch, seq, heads*head_dim)
        x[current["rows"], :, head * hd : (head + 1) * hd] += vector
        return (x, *args[1:])

    handle = lm.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with hooks(pre=[(lm.layers[layer].get_submodule(lm.arch.attn_out), shift)]):
            yield
    finally:
        handle.remove()


def planted_vector(hd: int, scale: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(hd, generator=g)
    return scale * v / v.norm()


def probe_job(examples, **params):
    return parse_job({"kind": "probe", "model": "tiny", "input": {"examples": examples}, "params": params})


# -- collection ---------------------------------------------------------------------------------


def test_collection_equals_single_example_forwards(tiny_llama):
    lm = tiny_llama
    before = hook_count(lm.model)  # transformers may keep its own output-capturing hooks
    texts = random_texts(7)
    ids = [lm.encode(t).ids for t in texts]
    heads = collect(lm, ids, "attn_head")  # (N, layers, heads, head_dim), batched and padded
    resid = collect(lm, ids, "residual", [0, 1], "mean")
    assert heads.shape == (7, 3, 6, 12)
    for i, seq in enumerate(ids):
        with capture_inputs({l: lm.layers[l].self_attn.o_proj for l in range(3)}) as got, \
                capture_outputs({l: lm.layers[l] for l in range(2)}) as blocks:
            lm.model(input_ids=torch.tensor([seq]))
        for l in range(3):
            torch.testing.assert_close(heads[i, l], got[l][0, -1].reshape(6, 12), atol=1e-5, rtol=1e-5)
        for l in range(2):
            torch.testing.assert_close(resid[i, l], blocks[l][0].mean(0), atol=1e-5, rtol=1e-5)
    assert hook_count(lm.model) == before


def test_mlp_site_is_the_ffn_write(tiny_gpt2):
    lm = tiny_gpt2
    ids = [lm.encode(t).ids for t in random_texts(3)]
    acts = collect(lm, ids, "mlp", [1])  # (N, 1, hidden)
    for i, seq in enumerate(ids):
        captured = {}
        h = lm.layers[1].mlp.register_forward_hook(lambda m, a, o: captured.setdefault("o", o))
        try:
            lm.model(input_ids=torch.tensor([seq]))
        finally:
            h.remove()
        torch.testing.assert_close(acts[i, 0], captured["o"][0, -1], atol=1e-5, rtol=1e-5)


def test_hooks_come_off_after_an_exception(tiny_llama):
    def boom(fraction):
        raise RuntimeError("stop")

    before = hook_count(tiny_llama.model)
    with pytest.raises(RuntimeError):
        collect(tiny_llama, [tiny_llama.encode("hello world").ids], "attn_head", progress=boom)
    assert hook_count(tiny_llama.model) == before


# -- probes on a planted direction --------------------------------------------------------------


def test_probe_finds_the_planted_head_and_layer(tiny_llama):
    lm = tiny_llama
    before = hook_count(lm.model)
    texts = random_texts(80, seed=3)
    rng = np.random.default_rng(0)
    labels = rng.permutation([1] * 40 + [0] * 40).tolist()  # random labels: only the plant carries them
    marked = {tuple(lm.encode(t).ids) for t, y in zip(texts, labels) if y == 1}
    examples = [{"text": t, "label": "A" if y else "B"} for t, y in zip(texts, labels)]
    base = collect(lm, [lm.encode(t).ids for t in texts], "attn_head")[:, 2, 4]  # (N, head_dim)
    v = planted_vector(12, 5 * float(base.std(0).mean()))  # 5 noise sd along one direction
    with planted(lm, marked, layer=2, head=4, vector=v):
        heads = probe.run(lm, probe_job(examples, site="attn_head", top=3), Context())
        resid = probe.run(lm, probe_job(examples, site="residual", position="mean"), Context())
    grid = np.array(heads.accuracy)  # (layers, heads)
    assert heads.best[0].layer == 2 and heads.best[0].head == 4
    assert heads.best[0].accuracy >= 0.95
    others = np.delete(grid.ravel(), 2 * 6 + 4)
    assert others.max() < 0.8 and abs(others.mean() - 0.5) < 0.12  # chance elsewhere
    assert heads.chance == 0.5 and heads.classes == ["A", "B"] and heads.validation == "k-fold (k=5)"
    # the residual stream carries the shift only from block 2 on
    assert resid.accuracy[2] >= 0.85 and max(resid.accuracy[:2]) < 0.7, resid.accuracy
    assert hook_count(lm.model) == before


def test_probe_on_an_encoder(tiny_bert):
    texts = random_texts(24, seed=5)
    examples = [{"text": t, "label": i % 3} for i, t in enumerate(texts)]  # three classes
    res = probe.run(tiny_bert, probe_job(examples, site="mlp", position="mean", folds=3, layers=[1]), Context())
    assert res.layers == [1] and len(res.accuracy) == 1 and res.classes == [0, 1, 2]
    assert 0.0 <= res.accuracy[0] <= 1.0 and res.best[0].head is None


# -- splits --------------------------------------------------------------------------------------


def test_folds_are_seeded_stratified_and_keep_groups_together():
    y = np.array([0, 1] * 20)
    groups = [f"q{i // 2}" for i in range(40)]  # each question's true and false answer
    a, desc = probe.make_splits(y, groups, SplitParams(folds=4, seed=7))
    b, _ = probe.make_splits(y, groups, SplitParams(folds=4, seed=7))
    c, _ = probe.make_splits(y, groups, SplitParams(folds=4, seed=8))
    assert desc == "k-fold (k=4)" and len(a) == 4
    assert all((ta == tb).all() for (ta, _), (tb, _) in zip(a, b))
    assert any((ta != tc).any() for (ta, _), (tc, _) in zip(a, c) if len(ta) == len(tc)) or \
        any(len(ta) != len(tc) for (ta, _), (tc, _) in zip(a, c))
    for train, val in a:
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert abs(y[val].mean() - 0.5) < 0.2
    assert sorted(np.concatenate([v for _, v in a]).tolist()) == list(range(40))
    (train, val), = probe.make_splits(y, groups, SplitParams(holdout=0.2))[0]
    assert len(val) == 8 and not {groups[i] for i in train} & {groups[i] for i in val}


def test_too_few_examples_for_the_folds_is_bad_input():
    with pytest.raises(BadInput, match="folds=5"):
        probe.make_splits(np.array([0, 0, 0, 1, 1, 1]), None, SplitParams(folds=5))


def test_schema_limits():
    with pytest.raises(ValidationError, match="two distinct labels"):
        probe_job([{"text": f"t{i}", "label": "x"} for i in range(6)])
    req = probe_job([{"text": f"t{i}", "label": i % 2} for i in range(6)])
    errors = req.over_limits(Limits(max_samples=5))
    assert errors and errors[0].ctx["limit"] == "max_samples" and errors[0].loc == ["input", "examples"]


def test_layer_out_of_range_is_bad_input(tiny_llama):
    examples = [{"text": t, "label": i % 2} for i, t in enumerate(random_texts(10))]
    with pytest.raises(BadInput, match="n_layers=3"):
        probe.run(tiny_llama, probe_job(examples, layers=[5], folds=2), Context())


# -- the batched solver equals scikit-learn ------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 3])
def test_batched_logistic_regression_equals_sklearn(n_classes):
    """Same objective (L2, C, unpenalised intercept, standardised on the training rows) as
    sklearn's LogisticRegression (one-vs-rest beyond two classes): same weights, same predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    from workers.numerics import logistic

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4, 10))  # (N, sites, D)
    y = np.arange(90) % n_classes
    X[:, 1, :2] += y[:, None] * 0.7  # one informative site
    X[:, 2, 3] *= 50.0  # a badly scaled dimension
    splits, _ = probe.make_splits(y, None, SplitParams(folds=3, seed=1))
    train = torch.zeros(3, 90, dtype=torch.bool)
    for k, (tr, _) in enumerate(splits):
        train[k, tr] = True
    model = logistic.fit(torch.from_numpy(X), y, train, C=0.5)
    pred = logistic.predict(model, torch.from_numpy(X))  # (F, S, N)
    for k, (tr, _) in enumerate(splits):
        for s in range(4):
            scaler = StandardScaler().fit(X[tr, s])
            lr = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
            ref = (OneVsRestClassifier(lr) if n_classes > 2 else lr).fit(scaler.transform(X[tr, s]), y[tr])
            coef = np.stack([e.coef_[0] for e in ref.estimators_]) if n_classes > 2 else ref.coef_
            np.testing.assert_allclose(model["coef"][k, s].numpy(), coef, atol=1e-4, rtol=1e-3)
            assert (pred[k, s].numpy() == ref.predict(scaler.transform(X[:, s]))).all()
