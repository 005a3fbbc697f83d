"""Gradient attribution checked against Captum and direct autograd on a tiny GQA LLaMA."""

import pytest
import torch
from captum.attr import LayerIntegratedGradients

from schemas.jobs import parse_job
from schemas.limits import Limits
from workers.context import Context
from workers.methods import attribution

PROMPT = "When Mary and John went to the store, John gave a drink to"


def request(**params):
    target = params.pop("target", " Mary")
    text = {"prompt": PROMPT} if target is None else {"prompt": PROMPT, "target": target}
    return parse_job({"kind": "attribution", "model": "tiny", "input": text, "params": params})


def captum_ig(lm, ids, target_id, baseline_id, n_steps, rule):
    """Captum's LayerIntegratedGradients on the embedding layer, attributions summed over d."""
    def logprob(input_ids):
        logits = lm.model(input_ids=input_ids).logits[:, -1]
        return torch.log_softmax(logits.float(), -1)[:, target_id]

    lig = LayerIntegratedGradients(logprob, lm.embed)
    x = torch.tensor([ids])
    base = torch.full_like(x, baseline_id)
    base[0, 0] = x[0, 0]  # BOS kept fixed, as fix_special_tokens does
    attr, delta = lig.attribute(x, base, n_steps=n_steps, method=rule, return_convergence_delta=True)
    return attr.sum(-1)[0], delta


@pytest.mark.parametrize("rule,steps", [("gausslegendre", 50), ("riemann_trapezoid", 20), ("riemann_middle", 16)])
def test_ig_equals_captum_layer_integrated_gradients(tiny_llama, rule, steps):
    lm = tiny_llama
    res = attribution.run(lm, request(n_steps=steps, rule=rule), Context())
    enc = lm.encode(PROMPT)
    target_id = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    expected, delta = captum_ig(lm, enc.ids, target_id, lm.tokenizer.pad_token_id, steps, rule)
    if rule == "riemann_trapezoid":  # Captum's trapezoid weights sum to (n-1)/n; ours to 1
        f_diff = float(expected.sum() - delta)
        expected = expected * steps / (steps - 1)
        delta = expected.sum() - f_diff
    assert res.target_tokens == [" Mary"]
    torch.testing.assert_close(torch.tensor(res.scores[0]), expected, atol=1e-5, rtol=1e-4)
    assert res.convergence.delta[0] == pytest.approx(float(delta), abs=1e-5)


def test_ig_completeness_on_a_smooth_path(tiny_llama):
    res = attribution.run(tiny_llama, request(n_steps=64, target=" Mary and John"), Context())
    c = res.convergence
    assert len(res.scores) == len(res.target_tokens) == len(c.delta) > 1
    for row, f_x, f_0, rel in zip(res.scores, c.f_input, c.f_baseline, c.relative_error):
        assert sum(row) == pytest.approx(f_x - f_0, abs=1e-4)
        assert rel < 1e-3


def test_multi_token_rows_teacher_force_the_earlier_target_tokens(tiny_llama):
    """Row j equals IG of target token j on prompt ++ target[:j], restricted to prompt columns."""
    lm = tiny_llama
    res = attribution.run(lm, request(n_steps=24, target=" Mary and"), Context())
    enc = lm.encode(PROMPT)
    tgt = lm.tokenizer(" Mary and", add_special_tokens=False)["input_ids"]
    n = len(enc.ids)
    for j in range(len(tgt)):
        x = torch.tensor([enc.ids + tgt[:j]])
        x_emb = lm.embed(x)
        base = x_emb.clone()
        base[0, 1:n] = lm.embed(torch.tensor(lm.tokenizer.pad_token_id))
        total = torch.zeros_like(x_emb)
        from workers.numerics.quadrature import quadrature
        for a, w in zip(*quadrature("gausslegendre", 24)):
            pt = (base + a * (x_emb - base)).requires_grad_(True)
            lp = torch.log_softmax(lm.model(inputs_embeds=pt).logits[0, -1], -1)[tgt[j]]
            (g,) = torch.autograd.grad(lp, pt)
            total += w * g
        expected = ((x_emb - base) * total).sum(-1)[0, :n]
        torch.testing.assert_close(torch.tensor(res.scores[j]), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_gradient_methods_equal_direct_autograd(tiny_llama, method):
    lm = tiny_llama
    res = attribution.run(lm, request(method=method, target_metric="prob"), Context())
    ids = torch.tensor([lm.encode(PROMPT).ids])
    x = lm.embed(ids).detach().requires_grad_(True)
    target_id = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    p = torch.softmax(lm.model(inputs_embeds=x).logits[0, -1], -1)[target_id]
    (g,) = torch.autograd.grad(p, x)
    expected = g[0].norm(dim=-1) if method == "saliency" else (x * g).sum(-1)[0]
    torch.testing.assert_close(torch.tensor(res.scores[0]), expected.detach(), atol=1e-6, rtol=1e-4)
    assert res.convergence is None


def test_word_granularity_sums_the_tokens_of_each_word(tiny_llama):
    tok = attribution.run(tiny_llama, request(n_steps=8), Context())
    word = attribution.run(tiny_llama, request(n_steps=8, granularity="word"), Context())
    assert "".join(word.input_tokens) == "".join(tok.input_tokens)
    assert len(word.input_tokens) < len(tok.input_tokens)
    for (a, b), s in zip(word.unit_spans, word.scores[0]):
        assert s == pytest.approx(sum(tok.scores[0][a:b]), abs=1e-6)


def test_special_tokens_stay_fixed_and_score_zero(tiny_llama):
    res = attribution.run(tiny_llama, request(n_steps=8), Context())
    assert res.input_tokens[0] == "<s>" and res.scores[0][0] == 0.0
    still_first = attribution.run(tiny_llama, request(n_steps=8, fix_special_tokens=False), Context())
    assert still_first.scores[0][0] == 0.0  # position 0 is also the attention sink, fixed by default
    free = attribution.run(tiny_llama, request(n_steps=8, fix_special_tokens=False, fix_first_token=False),
                           Context())
    assert free.scores[0][0] != 0.0


def test_auto_steps_double_until_tolerance(tiny_llama):
    res = attribution.run(tiny_llama, request(n_steps="auto", tolerance=1e-6), Context())
    assert res.convergence.n_steps >= 32 and res.convergence.n_steps & (res.convergence.n_steps - 1) == 0
    capped = attribution.run(tiny_llama, request(n_steps="auto", tolerance=1e-12), Context(limits=Limits(max_steps=64)))
    assert capped.convergence.n_steps == 64


def test_generated_target_when_none_given(tiny_llama):
    res = attribution.run(tiny_llama, request(target=None, max_new_tokens=3, n_steps=4), Context())
    assert res.target_generated and len(res.target_tokens) == 3 == len(res.scores)


def test_zero_baseline_and_mask_baseline_errors(tiny_llama):
    from workers.errors import BadInput

    # RMSNorm makes the path from a zero embedding steep near α = 0: more steps, smaller error.
    coarse = attribution.run(tiny_llama, request(baseline="zero", n_steps=8), Context()).convergence
    fine = attribution.run(tiny_llama, request(baseline="zero", n_steps=128), Context()).convergence
    assert fine.relative_error[0] < coarse.relative_error[0]
    assert fine.f_input == coarse.f_input and fine.f_baseline == coarse.f_baseline
    with pytest.raises(BadInput, match="no mask token"):
        attribution.run(tiny_llama, request(baseline="mask"), Context())


def test_progress_is_reported_and_can_stop_the_job(tiny_llama):
    from workers.errors import Canceled

    seen = []
    attribution.run(tiny_llama, request(n_steps=8), Context(progress=seen.append))
    assert seen and seen[-1] == 1.0

    def cancel(fraction):
        raise Canceled("stop")

    with pytest.raises(Canceled):
        attribution.run(tiny_llama, request(n_steps=8), Context(progress=cancel))


def test_completeness_over_tolerance_is_flagged_in_warnings(tiny_llama):
    """Issue 10 item 3: an IG result whose relative completeness error is over `tolerance` says so."""
    coarse = attribution.run(tiny_llama, request(baseline="zero", n_steps=1), Context())
    assert coarse.convergence.relative_error[0] > 0.05
    (warning,) = coarse.warnings
    assert warning.type == "ig-not-converged" and "n_steps 'auto'" in warning.detail
    assert warning.ctx["relative_error"] == coarse.convergence.relative_error[0]
    assert warning.ctx["tolerance"] == 0.05 and warning.ctx["n_steps"] == 1
    assert coarse.model_dump(mode="json")["warnings"][0]["type"] == "ig-not-converged"

    fine = attribution.run(tiny_llama, request(baseline="zero", n_steps=50), Context())
    assert fine.convergence.relative_error[0] <= 0.05 and fine.warnings == []
    # the tolerance is the caller's: the same coarse error under a looser one is not flagged
    loose = attribution.run(tiny_llama, request(baseline="zero", n_steps=1, tolerance=1.0,
                                                rule="riemann_right"), Context())
    assert loose.convergence.relative_error[0] <= 1.0 and loose.warnings == []

    capped = attribution.run(tiny_llama, request(n_steps="auto", tolerance=1e-12), Context(limits=Limits(max_steps=64)))
    assert [w.type for w in capped.warnings] == ["ig-not-converged"] and "max_steps" in capped.warnings[0].detail


def test_every_result_carries_an_empty_warnings_list_by_default(tiny_llama):
    res = attribution.run(tiny_llama, request(method="saliency"), Context())
    assert res.warnings == [] and res.model_dump(mode="json")["warnings"] == []
