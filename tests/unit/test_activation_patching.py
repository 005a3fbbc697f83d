"""Activation patching against an independent one-full-forward-per-patch loop, the identities the
method rests on, and attribution patching against plain autograd, on tiny LLaMA (GQA) and GPT-2."""

from __future__ import annotations

import pytest
import torch

from schemas.jobs import JOB_MODELS
from workers.context import Context
from workers.errors import BadInput
from workers.internals.hooks import hook_count
from workers.methods import activation_patching
from workers.patching import attribution
from workers.patching.exact import (
    BaseRun,
    Counts,
    Metric,
    Patch,
    base_run,
    patched_metrics,
    plain_metric,
    plan,
    prefix_cache,
    read_site,
)
from workers.patching.sites import site_of

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def job(**params):
    return JOB_MODELS["activation_patching"](
        kind="activation_patching", model="tiny",
        input={"clean_prompt": CLEAN, "corrupted_prompt": CORRUPT, "answer": " Mary", "wrong_answer": " John"},
        params=params)


def component_slice(lm, component):
    """(module path in a block, reads input?, first feature, units, width): written out per family here,
    independently of workers.patching.sites."""
    c = lm.config
    H = getattr(c, "num_attention_heads", None) or c.n_head
    KV = getattr(c, "num_key_value_heads", None) or H
    dh = getattr(c, "head_dim", None) or (c.n_embd // H)
    d = lm.embed.weight.shape[1]
    gpt2 = lm.arch.family == "gpt2"
    table = {
        "residual": ("", True, 0, 1, d),
        "attn_out": ("attn" if gpt2 else "self_attn", False, 0, 1, d),
        "mlp_out": ("mlp", False, 0, 1, d),
        "attn_head": ("attn.c_proj" if gpt2 else "self_attn.o_proj", True, 0, H, dh),
        "head_query": ("attn.c_attn" if gpt2 else "self_attn.q_proj", False, 0, H, dh),
        "head_key": ("attn.c_attn" if gpt2 else "self_attn.k_proj", False, H * dh if gpt2 else 0, KV, dh),
        "head_value": ("attn.c_attn" if gpt2 else "self_attn.v_proj", False, 2 * H * dh if gpt2 else 0, KV, dh),
    }
    return table[component]


def naive_metric(lm, component, patch, base_ids, source_ids, metric):
    """Run the source fully, keep the component, run the base fully with it written in."""
    path, reads_input, lo, units, width = component_slice(lm, component)
    module = lm.layers[patch.layer].get_submodule(path)
    kept = {}

    def region(t):
        pos = slice(None) if patch.position is None else slice(patch.position, patch.position + 1)
        if patch.unit is None:
            return (0, pos, slice(lo, lo + units * width))
        return (0, pos, slice(lo + patch.unit * width, lo + (patch.unit + 1) * width))

    def read(t):
        kept["a"] = t[region(t)].clone()

    def write(t):
        t = t.clone()
        t[region(t)] = kept["a"]
        return t

    def run(ids, fn):
        if reads_input:
            h = module.register_forward_pre_hook(lambda m, a: (lambda new: None if new is None else (new, *a[1:]))(fn(a[0])))
        else:
            h = module.register_forward_hook(
                lambda m, a, o: (lambda new: None if new is None else ((new, *o[1:]) if isinstance(o, tuple) else new))(
                    fn(o[0] if isinstance(o, tuple) else o)))
        try:
            with torch.no_grad():
                return lm.model(input_ids=torch.tensor([ids])).logits[:, -1].float()
        finally:
            h.remove()

    run(source_ids, read)
    return float(metric(run(base_ids, write))[0])


def setup(lm, component):
    clean = lm.encode(CLEAN).ids
    corrupt = lm.encode(CORRUPT).ids
    assert len(clean) == len(corrupt)
    a, b = lm.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0], 7
    return clean, corrupt, Metric(a, b), site_of(lm, component)


def logit_diff(metric):
    """The metric from full logits, for the independent computations."""
    return lambda logits: logits[:, metric.answer] - logits[:, metric.wrong]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("component", ["residual", "attn_out", "mlp_out", "attn_head", "head_query", "head_key",
                                       "head_value"])
def test_batched_exact_patching_equals_one_full_forward_per_patch(request, model, component, monkeypatch):
    lm = request.getfixturevalue(model)
    monkeypatch.setenv("LANTERN_BATCH_TOKENS", "40")  # several batches, mixed layers and prefixes
    clean, corrupt, metric, site = setup(lm, component)
    T, L = len(clean), len(lm.layers)
    if site.units == 1:
        patches = [Patch(layer, pos) for layer in range(L) for pos in range(T)]
    else:
        patches = [Patch(layer, None, u) for layer in range(L) for u in range(site.units)]
        patches += [Patch(layer, pos, u) for layer in (0, L - 1) for u in (0, site.units - 1) for pos in (0, 3, T - 1)]
    counts = Counts()
    base = base_run(lm, corrupt, metric, counts)
    source = read_site(lm, site, clean, list(range(L)), counts)
    got = patched_metrics(lm, site, patches, base, source, metric, counts)
    want = torch.tensor([naive_metric(lm, component, p, corrupt, clean, logit_diff(metric)) for p in patches])
    assert torch.allclose(got, want, atol=1e-4, rtol=0), (got - want).abs().max()
    assert counts.positions < counts.naive  # prefixes and early layers were reused
    assert hook_count(lm.model) == 0


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_patching_a_whole_layer_of_the_residual_restores_the_clean_metric(request, model):
    lm = request.getfixturevalue(model)
    clean, corrupt, metric, site = setup(lm, "residual")
    counts = Counts()
    clean_metric = base_run(lm, clean, metric, counts).metric
    base = base_run(lm, corrupt, metric, counts)
    source = read_site(lm, site, clean, list(range(len(lm.layers))), counts)
    whole = [Patch(layer) for layer in range(len(lm.layers))]  # every position of one layer's stream
    got = patched_metrics(lm, site, whole, base, source, metric, counts)
    assert torch.allclose(got, torch.full_like(got, clean_metric), atol=1e-4)
    # clean into clean changes nothing
    same = patched_metrics(lm, site, [Patch(1, 3), Patch(0, None)], base_run(lm, clean, metric, counts), source,
                           metric, counts)
    assert torch.allclose(same, torch.full_like(same, clean_metric), atol=1e-5)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("component", ["residual", "attn_head", "head_value"])
def test_attribution_patching_is_the_gradient_dot_the_difference(request, model, component):
    lm = request.getfixturevalue(model)
    clean, corrupt, metric, site = setup(lm, component)
    path, reads_input, lo, units, width = component_slice(lm, component)
    layer = len(lm.layers) - 1
    patches = [Patch(layer, 2, None if units == 1 else units - 1), Patch(layer, None, None if units == 1 else 0)]
    source = read_site(lm, site, clean, [layer], Counts())
    got, _ = attribution.estimates(lm, site, patches, corrupt, source, metric, Counts())
    # independent: the component of the corrupted run as a leaf, autograd, dot with the difference
    module = lm.layers[layer].get_submodule(path)
    leaf = {}

    def swap(t):
        t = t.detach().clone().requires_grad_(True)
        leaf["t"] = t
        return t
    h = (module.register_forward_pre_hook(lambda m, a: (swap(a[0]), *a[1:])) if reads_input else
         module.register_forward_hook(lambda m, a, o: (swap(o[0]), *o[1:]) if isinstance(o, tuple) else swap(o)))
    try:
        with torch.enable_grad():
            m = logit_diff(metric)(lm.model(input_ids=torch.tensor([corrupt])).logits[:, -1].float())
            (g,) = torch.autograd.grad(m.sum(), [leaf["t"]])
    finally:
        h.remove()
    a_corr = leaf["t"].detach()[0, :, lo:lo + units * width].unflatten(-1, (units, width))
    delta = ((source[layer] - a_corr) * g[0, :, lo:lo + units * width].unflatten(-1, (units, width))).sum(-1)
    want = [float(delta[2, patches[0].unit or 0]), float(delta[:, patches[1].unit or 0].sum())]
    assert got.tolist() == pytest.approx(want, abs=1e-5)
    assert hook_count(lm.model) == 0


def test_the_job_reports_a_grid_with_named_axes_and_the_forwards_run(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    res = activation_patching.run(tiny_llama, job(component="attn_head", layers=[0, -1]), Context())
    assert res.axes == ["layer", "head"] and res.layers == [0, 2] and res.heads == list(range(6))
    assert len(res.effects) == 2 and len(res.effects[0]) == 6
    assert 2 < res.forwards <= 2 + 2  # source read (with its metric), base run, then a batch or one per layer
    res = activation_patching.run(tiny_llama, job(component="residual", positions=[-1, 0]), Context())
    assert res.axes == ["layer", "position"] and res.positions == [0, len(res.clean_tokens) - 1]
    # position 0 (BOS) is the same token in both prompts: patching it changes nothing at any layer
    assert [row[0] for row in res.effects] == pytest.approx([0.0] * 3, abs=1e-5)
    res = activation_patching.run(tiny_llama, job(component="head_key", per_position=True, heads=[1]), Context())
    assert res.axes == ["layer", "kv_head", "position"] and res.heads == [1]
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.model.state_dict().items())
    assert hook_count(tiny_llama.model) == 0


def test_attribution_job_verifies_its_top_estimates_exactly(tiny_llama):
    res = activation_patching.run(tiny_llama, job(method="attribution", verify_top_k=5), Context())
    assert len(res.checks) == 5
    exact = activation_patching.run(tiny_llama, job(), Context())
    for c in res.checks:
        assert c.exact == pytest.approx(exact.effects[c.index[0]][c.index[1]], abs=1e-4)
        assert c.estimate == pytest.approx(res.effects[c.index[0]][c.index[1]])
    assert res.correlation is None or -1.0 <= res.correlation <= 1.0
    assert res.forwards < exact.forwards


def test_noise_direction_and_pairs_average_before_normalising(tiny_llama):
    pair = {"clean_prompt": CLEAN, "corrupted_prompt": CORRUPT, "answer": " Mary", "wrong_answer": " John"}
    two = JOB_MODELS["activation_patching"](kind="activation_patching", model="tiny",
                                            input={"pairs": [pair, pair]}, params={"direction": "noise"})
    one = activation_patching.run(tiny_llama, job(direction="noise"), Context())
    res = activation_patching.run(tiny_llama, two, Context())
    assert res.n_pairs == 2
    assert torch.allclose(torch.tensor(res.effects), torch.tensor(one.effects), atol=1e-6)
    # noising BOS (the same token in both prompts) leaves the clean run: effect 1 at every layer
    assert [row[0] for row in one.effects] == pytest.approx([1.0] * 3, abs=1e-5)


def test_bad_pairs_are_refused_with_the_field_and_both_token_lists(tiny_llama):
    bad = JOB_MODELS["activation_patching"](
        kind="activation_patching", model="tiny",
        input={"clean_prompt": CLEAN, "corrupted_prompt": CORRUPT + " the store", "answer": " Mary",
               "wrong_answer": " John"})
    with pytest.raises(BadInput) as e:
        activation_patching.run(tiny_llama, bad, Context())
    err = e.value.errors[0]
    assert err.loc == ["input", "corrupted_prompt"] and err.type == "length_mismatch"
    assert "clean_tokens" in err.ctx and "corrupted_tokens" in err.ctx
    same = JOB_MODELS["activation_patching"](
        kind="activation_patching", model="tiny",
        input={"clean_prompt": CLEAN, "corrupted_prompt": CLEAN, "answer": " Mary", "wrong_answer": " John"})
    with pytest.raises(BadInput, match="no effect to normalise"):
        activation_patching.run(tiny_llama, same, Context())


def test_the_planner_cuts_batches_by_cost():
    patches = sorted(Patch(layer, pos) for layer in range(4) for pos in range(8))
    batches = plan(patches, T=8, L=4, overhead=0, budget=1000)
    assert sum(j - i for i, j in batches) == len(patches)
    # with no overhead every row runs only its own suffix and layers: one batch per (layer, position)
    assert len(batches) == len(patches)
    assert len(plan(patches, T=8, L=4, overhead=10_000, budget=1000)) == 1  # overhead dominates: one forward
    for i, j in plan(patches, T=8, L=4, overhead=10_000, budget=16):  # rows × suffix within the budget
        assert j - i == 1 or (j - i) * (8 - min(p.start for p in patches[i:j])) <= 16


def test_zero_and_mean_ablation_write_what_they_say(tiny_llama):
    pair = {"clean_prompt": CLEAN, "corrupted_prompt": CORRUPT, "answer": " Mary", "wrong_answer": " John"}
    other = {**pair, "clean_prompt": CORRUPT, "corrupted_prompt": CLEAN, "answer": " John", "wrong_answer": " Mary"}
    zero = activation_patching.run(tiny_llama, job(component="residual", direction="noise", ablation="zero",
                                                   layers=[0], positions=[3]), Context())
    # by hand: the clean run with the residual entering layer 0 at position 3 set to zero
    lm, ids = tiny_llama, tiny_llama.encode(CLEAN).ids
    h = lm.layers[0].register_forward_pre_hook(lambda m, a: (a[0].index_fill(1, torch.tensor([3]), 0.0), *a[1:]))
    try:
        patched = plain_metric(lm, ids, Metric(*[lm.tokenizer(t, add_special_tokens=False)["input_ids"][0]
                                                 for t in (" Mary", " John")]), Counts())
    finally:
        h.remove()
    want = (patched - zero.corrupted_metric) / (zero.clean_metric - zero.corrupted_metric)
    assert zero.effects[0][0] == pytest.approx(want, abs=1e-4)
    two = JOB_MODELS["activation_patching"](kind="activation_patching", model="tiny", input={"pairs": [pair, other]},
                                            params={"ablation": "mean", "component": "attn_head", "layers": [1]})
    mean = activation_patching.run(tiny_llama, two, Context())
    assert mean.axes == ["layer", "head"] and len(mean.effects[0]) == 6


def test_indices_out_of_the_model_are_refused_before_any_forward():
    from schemas.facts import Facts
    facts = Facts(n_layers=30, n_heads=9, n_kv_heads=3)
    errors = job(component="head_value", layers=[29, 30], heads=[2, 3]).over_facts(facts)
    assert [(e.loc, e.ctx["fact"]) for e in errors] == [(["params", "layers"], "n_layers"),
                                                         (["params", "heads"], "n_kv_heads")]
    assert job(component="attn_head", heads=[8], layers=[-30]).over_facts(facts) == []


def test_the_planner_batches_rows_that_run_no_layer():
    # a change at the final norm's input (l0 = L) runs no block, but a forward still costs its fixed part:
    # such rows share one forward instead of one forward each
    patches = [Patch(4, 7) for _ in range(20)]
    assert plan(patches, T=8, L=4, overhead=32, budget=1000) == [(0, 20)]


def test_the_metric_of_a_row_does_not_depend_on_its_batch(tiny_llama):
    metric = Metric(5, 6)
    h = torch.randn(37, tiny_llama.embed.weight.shape[1])
    together = metric.of_hidden(tiny_llama, h)
    alone = torch.cat([metric.of_hidden(tiny_llama, h[i:i + 1]) for i in range(len(h))])
    assert torch.equal(together, alone)


def test_the_prefix_cache_broadcasts_the_base_prefix_only_where_a_layer_runs():
    keys, values = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    base = BaseRun([0] * 8, 0.0, [(keys, values), (keys + 1, values + 1)])
    cache = prefix_cache(base, 3, rows=6)
    new_k, new_v = torch.randn(6, 2, 5, 4), torch.randn(6, 2, 5, 4)
    k, v = cache.update(new_k, new_v, 1)
    assert torch.equal(k, torch.cat([(keys + 1)[:, :, :3].expand(6, -1, -1, -1), new_k], -2))
    assert torch.equal(v, torch.cat([(values + 1)[:, :, :3].expand(6, -1, -1, -1), new_v], -2))
    assert cache.get_seq_length() == 3 and cache.layers[0].keys.shape == (1, 2, 3, 4)  # layer 0 never ran
