"""`icl_anchors` with the artifact store (Redis): a job reports every analysis and stores its β as an
`anchors` artifact; the stored β, applied by the `anchors` intervention of a later job, re-weights that
job's forwards exactly as the fit's own re-weighted forward (a bare forward, `generate`, `attribution`),
`scale: 0` is the plain model, and nothing persists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from redis import Redis

from common.artifacts import ArtifactStore
from schemas.jobs import parse_job
from schemas.kinds.icl_anchors import AnchorsRef
from tests.unit.test_icl_anchors import QUERIES, job, prompts_of
from workers.anchors.core import PrefixRunner, label_logits
from workers.context import Context
from workers.internals.hooks import hook_count
from workers.interventions.anchors import anchored, reweight_edit
from workers.interventions.anchors import apply as apply_anchors
from workers.methods import attribution, generate, icl_anchors


@pytest.fixture(scope="module")
def store(redis_url):
    return ArtifactStore(Redis.from_url(redis_url), owner="tenant-anchors")


def test_a_job_reports_every_analysis_and_stores_beta(tiny_llama, store):
    lm = tiny_llama
    fit = [{"text": "hello world again", "label": "pos"}, {"text": "the lazy dog", "label": "neg"},
           {"text": "a tiny world", "label": "pos"}, {"text": "two plus three", "label": "neg"}]
    req = job(lm, fit_examples=fit, params={"epochs": 5, "lr": 0.5, "flow_queries": 2})
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    res = icl_anchors.run(lm, req, Context(store=store))
    assert all(torch.equal(v, weights[k]) for k, v in lm.model.state_dict().items())
    assert res.flows.n_queries == 2 and len(res.flows.s_pq) == 3
    assert len(res.predictions) == len(QUERIES) and res.labels == ["pos", "neg"] and res.label_tokens == [" Mary", " John"]
    gold = [q["label"] for q in QUERIES]
    assert res.accuracy == pytest.approx(np.mean([p.predicted == g for p, g in zip(res.predictions, gold)]))
    rw = res.reweighting
    assert rw.accuracy_after == pytest.approx(np.mean([p.predicted == g for p, g in zip(rw.predictions_after, gold)]))
    assert np.array(rw.beta).shape == (3, 6, 2) and len(rw.fit_loss) == 5 and rw.accuracy_more_demos is not None
    view = store.get("anchors", rw.anchors_id, lm.id)
    assert view.data["beta"] == rw.beta
    assert lm.token_strings(view.data["label_token_ids"]) == res.label_tokens
    assert view.data["labels"] == ["pos", "neg"] and view.data["n_heads"] == 6 and view.data["n_fit"] == 4
    assert (res.auc is None) == any(w.type == "auc-undefined" for w in res.warnings)
    if res.auc is not None:
        assert len(res.auc.auc) == 3


@pytest.fixture(scope="module")
def fitted(tiny_llama, store):
    """β fitted by a job on the tiny LLaMA, and the job's prompts."""
    lm = tiny_llama
    fit = [{"text": "hello world again", "label": "pos"}, {"text": "the lazy dog", "label": "neg"}]
    res = icl_anchors.run(lm, job(lm, fit_examples=fit, params={"analyses": ["reweighting"], "epochs": 3, "lr": 1.0}),
                          Context(store=store))
    task, prompts = prompts_of(lm, job(lm))
    return res, task, prompts


def test_stored_anchors_reweight_a_later_forward_as_the_fit_did(tiny_llama, store, fitted):
    lm = tiny_llama
    res, task, prompts = fitted
    beta = torch.tensor(res.reweighting.beta)
    assert float(beta.abs().max()) > 0.1
    runner = PrefixRunner(lm, prompts, task.label_ids)
    cols, classes = torch.tensor(prompts[0].label_positions), torch.tensor(prompts[0].label_classes)
    rows = list(range(len(prompts)))
    with torch.no_grad():
        want = runner.forward(rows, edit=reweight_edit(beta, cols, classes, runner.targets(rows)))  # (Q, C)
        plain = runner.forward(rows)
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    hooks = hook_count(lm.model)
    for scale, expected in ((1.0, want), (0.0, plain)):
        ref = AnchorsRef(anchors_id=res.reweighting.anchors_id, scale=scale)
        with torch.no_grad(), apply_anchors(lm, ref, store):
            got = torch.stack([label_logits(lm.model(input_ids=torch.tensor([p.ids])).logits[0, -1], task.label_ids)
                               for p in prompts])
        assert torch.allclose(got, expected, atol=1e-5), scale
    assert hook_count(lm.model) == hooks and lm.config._attn_implementation == "sdpa"
    assert all(torch.equal(v, weights[k]) for k, v in lm.model.state_dict().items())


def test_generate_and_attribution_jobs_apply_the_anchors(tiny_llama, store, fitted):
    lm = tiny_llama
    res, task, prompts = fitted
    p = prompts[2]
    prompt = lm.tokenizer.decode(p.ids, skip_special_tokens=True)
    beta = torch.tensor(res.reweighting.beta)
    edit = reweight_edit(beta, torch.tensor(p.label_positions), torch.tensor(p.label_classes), torch.tensor([p.target]))
    with torch.no_grad(), anchored(lm, edit=edit):
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([p.ids])).logits[0, -1].double(), -1)  # (V,)
    with torch.no_grad():
        plain = torch.log_softmax(lm.model(input_ids=torch.tensor([p.ids])).logits[0, -1].double(), -1)
    anchors = {"anchors_id": res.reweighting.anchors_id}
    gen = parse_job({"kind": "generate", "model": lm.id, "input": {"prompt": prompt},
                     "params": {"max_new_tokens": 2, "anchors": anchors}})
    out = generate.run(lm, gen, Context(store=store))
    first = out.token_ids[0]
    assert out.token_logprobs[0] == pytest.approx(float(logp[first]), abs=1e-4)
    assert abs(float(logp[first]) - float(plain[first])) > 1e-4  # the anchors changed it
    att = parse_job({"kind": "attribution", "model": lm.id, "input": {"prompt": prompt, "target": " Mary"},
                     "params": {"method": "saliency", "anchors": anchors}})
    scores = attribution.run(lm, att, Context(store=store))
    assert scores.target_logprobs[0] == pytest.approx(float(logp[task.label_ids[0]]), abs=1e-4)
