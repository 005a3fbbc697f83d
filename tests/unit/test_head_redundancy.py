"""head_redundancy on tiny models, each figure against an independent computation or a planted truth:

- two heads made identical (same query rows, same output-projection columns, same KV head under GQA)
  are at distance 0 under every distance, in one cluster, with redundancy 1; masking one of them while
  doubling the other (ξ = 0 and 2: Att = Σ ξ_h z_h W_O^h) leaves the loss unchanged;
- the gradient importance ∂L/∂ξ_h equals central finite differences of the masked loss;
- the batched exact masked losses equal one plain forward per (head, text) with the head's output
  zeroed by the patching engine's ablation hooks and the loss computed by transformers itself
  (LLaMA with GQA entered mid-network, GPT-2 from layer 0, BERT's embedding drift, a target token);
- the pruning proposal's measured loss is within tolerance and the next head in the order is not;
- the JS and Hellinger distances equal scipy's and the formula's; clusters recover a planted block;
- the job leaves every weight bit-identical and no hook behind.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from schemas.facts import Facts
from schemas.kinds.head_redundancy import HeadRedundancyJob
from workers.context import Context
from workers.heads import clustering, distances, masking
from workers.internals.hooks import hook_count, hooks
from workers.methods import head_redundancy
from workers.patching.ablation import ablation_hooks
from workers.patching.exact import Counts

TEXTS = ["When Mary and John went to the store, John gave a drink to Mary.", "The capital of France is Paris.",
         "Two plus two is four.", "The quick brown fox jumps over the lazy dog!",
         "Hello world, this is a tiny tokenizer for tests."]


def _job(lm, texts=TEXTS, **params) -> HeadRedundancyJob:
    return HeadRedundancyJob.model_validate({"kind": "head_redundancy", "model": lm.id, "input": {"texts": texts},
                                             "params": params})


def _texts(lm, texts=TEXTS) -> masking.Texts:
    return masking.Texts([lm.encode(t).ids for t in texts], lm.tokenizer.pad_token_id or 0)


def _sharp_llama(seed: int):
    """Tiny LLaMA (6 query heads over 2 KV heads) with queries and keys scaled up (peaked maps rather
    than a random init's near-uniform ones), and the output projections and the unembedding scaled up, so
    that the loss depends on what the heads write (a random init's loss sits at log |V| whatever they do)."""
    from tests.tiny import tiny_llama

    lm = tiny_llama(seed=seed)
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.q_proj.weight *= 4
            layer.self_attn.k_proj.weight *= 4
            layer.self_attn.o_proj.weight *= 4
        lm.model.lm_head.weight *= 30  # logits far from uniform: the loss depends on what heads write
    return lm


@pytest.fixture(scope="module")
def sharp_llama():
    return _sharp_llama(seed=2)  # a seed where masking every head is over tolerance (others lower the loss)


@pytest.fixture(scope="module")
def twin_llama():
    """`_sharp_llama` where head 1 of layer 1 is a copy of head 0 (both read KV head 0): same query
    rows of q_proj, same input columns of o_proj."""
    lm = _sharp_llama(seed=3)
    attn = lm.layers[1].self_attn
    dh = 12
    with torch.no_grad():
        attn.q_proj.weight[dh:2 * dh] = attn.q_proj.weight[:dh]
        attn.o_proj.weight[:, dh:2 * dh] = attn.o_proj.weight[:, :dh]
    return lm


@pytest.mark.parametrize("kind", ["jensen_shannon", "hellinger", "output_correlation"])
def test_identical_heads_are_at_distance_zero_in_one_cluster(twin_llama, kind):
    res = head_redundancy.run(twin_llama, _job(twin_llama, distance=kind, threshold=1e-3,
                                               importance=["exact"], prune=False), Context())
    a, b = res.heads.index([1, 0]), res.heads.index([1, 1])
    assert res.matrix[a][b] == pytest.approx(0.0, abs=1e-6)
    off = [res.matrix[i][j] for i in range(len(res.heads)) for j in range(len(res.heads)) if i != j]
    assert sorted(off)[2] > 1e-2  # the twins are the only pair at zero
    assert [[1, 0], [1, 1]] in res.clusters
    by = {(s.layer, s.head): s for s in res.scores}
    assert by[(1, 0)].nearest == [1, 1] and by[(1, 1)].nearest == [1, 0]
    assert by[(1, 0)].redundancy == pytest.approx(1.0, abs=1e-6)
    assert by[(1, 0)].cluster == by[(1, 1)].cluster >= 0


def test_masking_one_twin_and_doubling_the_other_changes_nothing(twin_llama):
    lm = twin_llama
    texts = _texts(lm)
    obj = masking.Objective("lm_loss")
    counts = Counts()
    base = masking.base_run(lm, texts, obj, counts, keep_resid=True)
    K = len(texts.ids)
    rows = ([(k, {(1, 1): 0.0, (1, 0): 2.0}) for k in range(K)] + [(k, {(1, 0): 0.0, (1, 1): 2.0}) for k in range(K)]
            + [(k, {(1, 1): 0.0}) for k in range(K)])
    v = masking.masked_values(lm, texts, rows, obj, counts)
    per_text = (v.sums / v.weights).reshape(3, K)
    base_per_text = base.sums / base.weights
    assert torch.allclose(per_text[0], base_per_text, atol=1e-5)
    assert torch.allclose(per_text[1], base_per_text, atol=1e-5)
    assert (per_text[2] - base_per_text).abs().max() > 1e-3  # masking alone does change it


def test_gradient_importance_matches_finite_differences(tiny_llama):
    lm = tiny_llama
    texts = _texts(lm, TEXTS[:2])
    obj = masking.Objective("lm_loss")
    heads = [(0, 0), (0, 4), (1, 2), (2, 5)]
    counts = Counts()
    masking.base_run(lm, texts, obj, counts, keep_resid=True)
    grad = masking.mask_gradients(lm, texts, heads, obj, counts)  # (K, 4)
    eps = 1e-2
    for k in range(len(texts.ids)):
        rows = [(k, {h: 1 + s * eps}) for h in heads for s in (1, -1)]
        v = masking.masked_values(lm, texts, rows, obj, counts)
        loss = (v.sums / v.weights).reshape(len(heads), 2)
        fd = (loss[:, 0] - loss[:, 1]) / (2 * eps)
        assert torch.allclose(grad[k], fd, rtol=2e-2, atol=2e-5), (grad[k], fd)
        assert grad[k].abs().max() > 1e-4


def _hf_masked_loss(lm, texts: list[list[int]], head, targets=None) -> float:
    """One plain forward per text, the head zeroed by the patching ablation hooks, transformers' own loss."""
    forward, pre = ablation_hooks(lm, [head], None)
    total = weight = 0.0
    with torch.no_grad(), hooks(forward=forward, pre=pre):
        for k, ids in enumerate(texts):
            x = torch.tensor([ids])
            if targets is None:
                out = lm.model(input_ids=x, labels=x)
                total += float(out.loss) * (len(ids) - 1)
                weight += len(ids) - 1
            else:
                logits = lm.model(input_ids=x).logits[0, -1].double()
                total += float(torch.logsumexp(logits, -1) - logits[targets[k]])
                weight += 1
    return total / weight


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_batched_exact_losses_equal_one_forward_per_head(model, request):
    lm = request.getfixturevalue(model)
    texts = _texts(lm)
    obj = masking.Objective("lm_loss")
    counts = Counts()
    masking.base_run(lm, texts, obj, counts, keep_resid=True)
    L, H = len(lm.layers), masking.n_units(lm)
    heads = [(layer, h) for layer in range(L) for h in range(H)]
    before = counts.forwards
    losses, _ = masking.head_losses(lm, texts, heads, obj, counts)
    assert counts.forwards - before < len(heads)  # many masked rows per forward
    for head, loss in zip(heads, losses):
        assert loss == pytest.approx(_hf_masked_loss(lm, texts.ids, head), abs=2e-5)


def test_batched_exact_target_losses_and_accuracy(tiny_llama):
    lm = tiny_llama
    texts = _texts(lm, TEXTS[:3])
    targets = [lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]] * 3
    obj = masking.Objective("target_loss", targets)
    counts = Counts()
    base = masking.base_run(lm, texts, obj, counts, keep_resid=True)
    heads = [(0, 1), (1, 3), (2, 0)]
    losses, acc = masking.head_losses(lm, texts, heads, obj, counts)
    for head, loss in zip(heads, losses):
        assert loss == pytest.approx(_hf_masked_loss(lm, texts.ids, head, targets), abs=2e-5)
    with torch.no_grad():
        preds = [int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()) for ids in texts.ids]
    assert base.accuracy() == pytest.approx(np.mean([p == t for p, t in zip(preds, targets)]))
    assert all(0.0 <= a <= 1.0 for a in acc)


def test_encoder_embedding_drift_equals_a_plain_forward(tiny_bert):
    lm = tiny_bert
    texts = _texts(lm, TEXTS[:3])
    obj = masking.Objective("embedding_drift")
    counts = Counts()
    base = masking.base_run(lm, texts, obj, counts, keep_resid=True)
    assert base.loss() == 0.0
    head = (1, 2)
    losses, _ = masking.head_losses(lm, texts, [head], obj, counts)
    forward, pre = ablation_hooks(lm, [head], None)
    drifts = []
    with torch.no_grad():
        for ids in texts.ids:
            plain = lm.model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
            with hooks(forward=forward, pre=pre):
                masked = lm.model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0)
            drifts.append(1 - float(torch.nn.functional.cosine_similarity(plain, masked, dim=0)))
    assert losses[0] == pytest.approx(np.mean(drifts), abs=1e-6) and losses[0] > 1e-6


def test_pruning_proposal_is_measured_and_tight(sharp_llama):
    tiny_llama = sharp_llama
    res = head_redundancy.run(tiny_llama, _job(tiny_llama, tolerance=0.002), Context())
    p = res.pruning
    assert p.loss_before == pytest.approx(res.base_loss)
    assert p.loss_after <= p.loss_before * 1.002 + 1e-12
    assert p.relative_change == pytest.approx((p.loss_after - p.loss_before) / p.loss_before)
    assert 0 < p.n_heads < len(res.heads) and p.next_loss > p.loss_before * 1.002
    # the set is the least important prefix of the exact order, and its loss is a real joint masked run
    order = sorted(res.scores, key=lambda s: (s.masked_loss, res.heads.index([s.layer, s.head])))
    assert p.heads == [[s.layer, s.head] for s in order[:p.n_heads]]
    texts = _texts(tiny_llama)
    counts = Counts()
    masking.base_run(tiny_llama, texts, masking.Objective("lm_loss"), counts, keep_resid=True)
    loss, _ = masking.joint_loss(tiny_llama, texts, {tuple(h): 0.0 for h in p.heads}, masking.Objective("lm_loss"),
                                 counts)
    assert loss == pytest.approx(p.loss_after, abs=1e-6)
    assert all(s.gradient_importance is not None and s.gradient_importance >= 0 for s in res.scores)
    assert res.masked_rows == len(TEXTS) * (len(res.heads) + p.evaluations)


def test_job_leaves_weights_and_hooks_untouched(tiny_llama):
    weights = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    head_redundancy.run(tiny_llama, _job(tiny_llama, random_control=True, distance="output_correlation"), Context())
    assert hook_count(tiny_llama.model) == 0
    assert all(torch.equal(v, tiny_llama.model.state_dict()[k]) for k, v in weights.items())


def test_distances_equal_scipy_and_the_formula():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 4, 7, generator=g) * 2, -1).double()
    js = distances.js_distance(p)
    hel = distances.hellinger_distance(p)
    for a in range(5):
        for b in range(5):
            ref = np.mean([jensenshannon(p[a, i].numpy(), p[b, i].numpy(), base=2) for i in range(4)])
            assert float(js[a, b]) == pytest.approx(ref, abs=1e-7)
            h = np.mean([math.sqrt(0.5 * float(((p[a, i].sqrt() - p[b, i].sqrt()) ** 2).sum())) for i in range(4)])
            assert float(hel[a, b]) == pytest.approx(h, abs=1e-7)
    c = torch.randn(4, 30, generator=g, dtype=torch.float64)
    ref = 1 - np.corrcoef(c.numpy())
    assert np.allclose(distances.correlation_distance(c).numpy(), ref, atol=1e-10)


def test_clusters_recover_a_planted_block_and_the_prefix_search():
    d = torch.full((6, 6), 0.9, dtype=torch.float64)
    for block in ([0, 2, 4], [1, 5]):
        for i in block:
            for j in block:
                d[i, j] = 0.05
    d.fill_diagonal_(0)
    groups, index = clustering.clusters_of(clustering.cluster_labels(d, 0.2))
    assert groups == [[0, 2, 4], [1, 5]] and index[3] == -1
    near, dist = clustering.nearest(d)
    assert near[3] in (0, 1, 2, 4, 5) and dist[3] == pytest.approx(0.9)
    for n, limit in ((10, 7), (10, 10), (10, 0), (1, 1)):
        k, failed, calls = clustering.largest_prefix(n, lambda k: k <= limit)
        assert k == limit and (failed is None if limit == n else failed == limit + 1) and calls <= 1 + math.ceil(
            math.log2(n + 1))
    r, ari = clustering.agreement(d, d * 2, clustering.cluster_labels(d, 0.2), clustering.cluster_labels(d * 2, 0.4))
    assert r == pytest.approx(1.0) and ari == pytest.approx(1.0)


def test_random_control_and_schema_checks(tiny_llama, tiny_bert):
    res = head_redundancy.run(tiny_llama, _job(tiny_llama, random_control=True, importance=["gradient"],
                                               prune_by="gradient"), Context())
    rc = res.random_control
    assert -1 <= rc.matrix_correlation <= 1 and rc.n_clusters >= 0 and res.pruning.order == "gradient"
    assert all(s.masked_loss is None for s in res.scores)
    ids = _texts(tiny_llama).ids
    rand = head_redundancy.random_texts(tiny_llama, ids, 0)
    assert [len(r) for r in rand] == [len(i) for i in ids] and rand != ids
    assert all(r[0] == i[0] for r, i in zip(rand, ids))  # BOS kept
    with pytest.raises(ValueError, match="one entry per text"):
        HeadRedundancyJob.model_validate({"kind": "head_redundancy", "model": "m", "input": {
            "texts": ["a b", "c d", "e f"], "targets": [" a", " b"]}})
    errors = _job(tiny_bert, importance=["gradient"], prune=False).over_facts(Facts(task="encoder", n_layers=2))
    assert [e.loc for e in errors] == [["params", "importance"]]
    errors = _job(tiny_llama, prune_on="accuracy").over_facts(Facts(task="causal_lm", n_layers=3))
    assert [e.loc for e in errors] == [["params", "prune_on"]]
    errors = _job(tiny_llama, layers=[5]).over_facts(Facts(task="causal_lm", n_layers=3))
    assert errors[0].loc == ["params", "layers"]


def test_encoder_job_reports_drift_and_prunes_within_it(tiny_bert):
    res = head_redundancy.run(tiny_bert, _job(tiny_bert, tolerance=1e-4), Context())
    assert res.metric == "embedding_drift" and res.base_loss == 0.0
    assert all(s.gradient_importance is None and s.masked_loss >= 0 for s in res.scores)
    assert res.pruning.loss_after <= 1e-4 and res.pruning.relative_change == res.pruning.loss_after
