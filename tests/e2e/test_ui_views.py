"""Every explorer view draws a result of its kind without error, in a real browser (Debian's chromium
via Playwright). The results are small hand-made ones, each validated by the kind's result model
first, so their shapes are the wire contract's; the views with real model output are in test_ui.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.jobs import KINDS

STATIC = Path(__file__).resolve().parents[2] / "service" / "ui" / "static"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKENS = ["<s>", "When", " Mary", " and", " John"]

FAITH = {"replacement": "pad", "ks": [10, 50], "f_input": -0.1, "comprehensiveness": [1.0, 3.0],
         "sufficiency": [2.0, 0.5], "aopc_comprehensiveness": 2.0, "aopc_sufficiency": 1.25,
         "deletion_curve": [-0.1, -2.0, -4.0], "deletion_auc": -4.1, "random_deletion_curve": [-0.1, -0.5, -4.0],
         "random_deletion_auc": -2.6}
ATTRIBUTION = {"method": "occlusion", "target_metric": "logprob", "input_tokens": TOKENS, "target_tokens": [" Mary"],
               "target_generated": False, "scores": [[0.0, 0.1, 2.0, -0.5, 0.3]], "target_logprobs": [-0.1],
               "faithfulness": FAITH}

RESULTS = {
    "attribution": ATTRIBUTION,
    "logit_lens": {"tokens": TOKENS, "positions": [3, 4], "target_token": " Mary", "target_id": 5,
                   "unembedding": "lm_head", "layers": [
                       {"layer": layer, "site": "resid_post", "top_tokens": [[" a", " b"], [" c", " d"]],
                        "top_ids": [[1, 2], [3, 4]], "top_probs": [[0.5, 0.2], [0.4, 0.1]],
                        "target_rank": [3, 0], "target_prob": [0.01, 0.4]} for layer in (0, 1)]},
    "ffn_projection": {"tokens": TOKENS, "position": 4, "token": " John", "n_values": 8, "projection": "lm_head",
                       "layers": [{"layer": 2, "update_norm": 3.0, "sub_updates": [
                           {"index": 5, "coefficient": -1.5, "value_norm": 2.0, "score": 3.0,
                            "top_tokens": [{"token": " x", "id": 9, "logit": 1.0}]}],
                           "promoted": [{"token": " y", "id": 3, "logprob_before": -3, "logprob_after": -2, "delta": 1}],
                           "suppressed": [{"token": " z", "id": 4, "logprob_before": -2, "logprob_after": -3,
                                           "delta": -1}]}]},
    "probe": {"site": "attn_head", "position": "last", "layers": [0, 1], "classes": [False, True], "n_examples": 10,
              "chance": 0.5, "validation": "k-fold (k=2)", "accuracy": [[0.5, 0.9], [0.6, 0.7]],
              "accuracy_std": [[0.1, 0.0], [0.1, 0.1]],
              "best": [{"layer": 0, "head": 1, "accuracy": 0.9, "accuracy_std": 0.0}]},
    "steering_fit": {"profile_id": "sp_" + "0" * 32, "heads": [{"layer": 1, "head": 0, "accuracy": 0.8, "sigma": 1.2}],
                     "accuracy_grid": [[0.5, 0.6], [0.8, 0.55]], "n_examples": 10, "chance": 0.5,
                     "validation": "k-fold (k=2)", "direction": "mass_mean"},
    "attention_patterns": {"n_prompts": 2, "layers": [0, 1], "heads": [0, 1],
                           "grid": [["vertical", "diagonal"], ["block", "heterogeneous"]],
                           "patterns": [], "distribution": {"vertical": 0.25, "diagonal": 0.25, "block": 0.25,
                                                            "heterogeneous": 0.25}, "thresholds": {}},
    "knowledge_neurons": {"answer_tokens": [" Paris"], "neurons": [{"layer": 27, "index": 100, "score": 0.9},
                                                                   {"layer": 29, "index": 7, "score": 0.4}],
                          "sharing_ratio": 0.7, "coarse_counts": [3, 4],
                          "prompts": [{"prompt": "The capital of France is", "prob": 0.5, "suppressed": 0.2,
                                       "enhanced": 0.7, "random_suppressed": 0.49}],
                          "controls": [], "summary": {"suppress": -0.6}},
    "knowledge_edit": {"edit_id": "ed_" + "0" * 32, "operation": "suppress",
                       "neurons": [{"layer": 27, "index": 100}], "located": True,
                       "reliability": {"score": 1.0, "prob_before": 0.5, "prob_after": 0.1, "prompts": []}},
    "circuit": {"pairs": [], "behaviour": {"logit_diff": 2.0, "io_above_s": 0.9, "io_prob": 0.3,
                                           "corrupted_logit_diff": 0.1},
                "direct_effects": [[0.0, 0.1], [0.5, -0.2]],
                "heads": [], "backup_heads": [],
                "faithfulness": {"ablation": "mean", "model": 2.0, "circuit": 1.6, "empty": 0.1, "ratio": 0.8, "with_negative": 0.85,
                                 "n_heads": 2, "share_of_heads": 0.5},
                "knockouts": [{"role": "name_mover", "heads": ["L1H0"], "logit_diff": 1.0, "drop": 0.5}],
                "graph": {"nodes": [{"id": "L0H1", "layer": 0, "head": 1, "role": "s_inhibition"},
                                    {"id": "L1H0", "layer": 1, "head": 0, "role": "name_mover"},
                                    {"id": "logits", "role": "logits"}],
                          "edges": [{"source": "L0H1", "target": "L1H0", "via": "q", "effect": 0.3},
                                    {"source": "L1H0", "target": "logits", "via": "logits", "effect": 0.5}]},
                "forwards": 10, "positions_computed": 100, "positions_naive": 200},
    "generate": {"text": " Paris.", "tokens": [" Paris", "."], "token_ids": [1, 2], "token_logprobs": [-0.1, -1.0],
                 "finish_reason": "length", "prompt_tokens": 5, "baseline_text": " Rome.",
                 "baseline_tokens": [" Rome", "."], "baseline_token_ids": [3, 2], "baseline_token_logprobs": [-2, -1]},
    "activation_patching": {"clean_tokens": TOKENS, "corrupted_tokens": TOKENS, "n_pairs": 1, "metric": "logit_diff",
                            "clean_metric": 3.0, "corrupted_metric": -1.0, "axes": ["layer", "head", "position"],
                            "layers": [0, 1], "heads": [0, 1], "positions": [3, 4],
                            "effects": [[[0.1, 0.2], [0.0, 0.9]], [[0.3, -0.1], [0.5, 0.2]]],
                            "forwards": 9, "positions_computed": 40, "positions_naive": 80},
    "syntactic_attention": {"n_sentences": 2, "n_words": 10, "n_tokens": 16, "layers": [0, 1], "heads": [0, 1], "sas": 0.8,
                            "best": {"layer": 1, "head": 0, "direction": "child", "score": 0.8},
                            "uas": [[0.3, 0.4], [0.8, 0.2]],
                            "uas_by_direction": {"parent": [[0.3, 0.4], [0.5, 0.2]], "child": [[0.1, 0.2], [0.8, 0.1]],
                                                 "both": [[0.2, 0.3], [0.6, 0.2]]},
                            "top_heads": [{"layer": 1, "head": 0, "direction": "child", "score": 0.8}],
                            "relations": [{"relation": "nsubj", "count": 2,
                                           "top": [{"layer": 1, "head": 0, "direction": "child", "score": 1.0},
                                                   {"layer": 0, "head": 1, "direction": "parent", "score": 0.5}],
                                           "baseline": {"offset": 1, "score": 0.5}}],
                            "baseline": {"offset": 1, "score": 0.4}},
    "head_redundancy": {"metric": "lm_loss", "n_texts": 2, "n_tokens": 12, "base_loss": 3.0, "distance": "jensen_shannon",
                        "threshold": 0.2, "heads": [[0, 0], [0, 1], [1, 0], [1, 1]],
                        "matrix": [[0, 0.1, 0.5, 0.6], [0.1, 0, 0.5, 0.6], [0.5, 0.5, 0, 0.4], [0.6, 0.6, 0.4, 0]],
                        "clusters": [[[0, 0], [0, 1]]],
                        "scores": [{"layer": layer, "head": head, "cluster": 0 if layer == 0 else -1,
                                    "nearest": [layer, 1 - head], "nearest_distance": 0.1 if layer == 0 else 0.4,
                                    "redundancy": 0.9 if layer == 0 else 0.6, "gradient_importance": 0.01 * (1 + head),
                                    "masked_loss": 3.0 + 0.1 * layer, "loss_change": 0.1 * layer}
                                   for layer in (0, 1) for head in (0, 1)],
                        "pruning": {"order": "exact", "criterion": "loss", "tolerance": 0.01, "heads": [[0, 0]],
                                    "n_heads": 1, "fraction": 0.25, "loss_before": 3.0, "loss_after": 3.01,
                                    "relative_change": 0.0033, "next_loss": 3.2, "evaluations": 3},
                        "random_control": {"matrix_correlation": 0.8, "adjusted_rand": 1.0, "n_clusters": 1,
                                           "clustered_heads": 2},
                        "forwards": 20, "masked_rows": 14,
                        "provenance": {"model": "smollm2-135m", "dtype": "float32", "device": "cpu",
                                       "kind": "head_redundancy", "params": {}, "versions": {}, "elapsed_s": 1.0}},
    "icl_anchors": {"labels": ["positive", "negative"], "label_tokens": [" positive", " negative"], "n_layers": 3,
                    "n_heads": 2, "tokens": ["Review", ":", " good", "\n", "Sent", ":", " positive", "\n", "Review", ":",
                                             " bad", "\n", "Sent", ":"],
                    "label_positions": [6], "target_position": 13,
                    "flows": {"s_wp": [0.3, 0.1, 0.0], "s_pq": [0.05, 0.4, 0.6], "s_ww": [0.1, 0.05, 0.01],
                              "n_queries": 2, "loss": "gold"},
                    "predictions": [{"predicted": "positive", "gold": "positive", "probs": {"positive": 0.7, "negative": 0.3}},
                                    {"predicted": "positive", "gold": "negative", "probs": {"positive": 0.6, "negative": 0.4}}],
                    "accuracy": 0.5, "auc": {"auc": [0.4, 0.7, 0.9], "r": [-0.1, 0.2, 1.0], "n_queries": 2, "classes_predicted": 2,
                                                          "counts": {"positive": 1, "negative": 1}},
                    "reweighting": {"anchors_id": "an_" + "0" * 32, "accuracy_before": 0.5, "accuracy_after": 1.0,
                                    "accuracy_more_demos": 0.5, "loss_before": 0.7, "loss_after": 0.3, "fit_loss": [0.7, 0.4],
                                    "beta": [[[0.1, -0.1], [0.0, 0.2]], [[0.3, -0.2], [0.1, 0.0]], [[0.5, -0.5], [0.0, 0.1]]],
                                    "predictions_after": [], "n_fit": 4},
                    "provenance": {"model": "smollm2-135m", "dtype": "float32", "device": "cpu",
                                   "kind": "icl_anchors", "params": {}, "versions": {}, "elapsed_s": 1.0}},
}


@pytest.fixture(scope="module")
def blank_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="make test installs playwright (dev extra)")
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test` installs it (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_content("<html><body><div id='v'></div></body></html>")
        page.add_script_tag(path=str(STATIC / "views.js"))
        yield page
        browser.close()


@pytest.mark.parametrize("kind", sorted(RESULTS))
def test_view_draws_its_kind(blank_page, kind):
    provenance = {"model": "m", "dtype": "float32", "device": "cpu", "kind": kind, "params": {}, "versions": {},
                  "elapsed_s": 0.1}  # the worker stamps it on every result (required since the method protocol)
    KINDS[kind].result.model_validate({**RESULTS[kind], "provenance": provenance})  # the shape is the wire contract's
    text = blank_page.evaluate(
        """([kind, result]) => { const el = document.getElementById('v'); el.replaceChildren();
             window.LanternViews[kind](el, result, {}); return el.innerText; }""", [kind, RESULTS[kind]])
    assert "could not draw" not in text, text
    assert blank_page.locator("#v svg, #v table, #v .side").count() >= 1  # a chart, table or the two texts


def test_methods_side_by_side_with_faithfulness(blank_page):
    views = [{"status": "finished", "result": {**ATTRIBUTION, "method": m}} for m in ("saliency", "occlusion")]
    text = blank_page.evaluate(
        """(views) => { const el = document.getElementById('v'); el.replaceChildren();
             window.LanternViews.compare(el, views); return el.innerText; }""", views)
    assert blank_page.locator("#v [data-method]").count() == 2
    assert blank_page.locator("#v .attr-cell").count() == 2 * len(TOKENS)
    assert "comprehensiveness AOPC" in text and "2.000" in text and "1.250" in text


def test_a_sweep_draws_a_chart_per_scalar_and_one_checkpoint_with_its_kinds_view(blank_page):
    """A sweep's result (any kind, `sweep: true`; schemas/sweeps.py) draws as a sweep: a chart per
    scalar with the change point's interval and the largest jump, the series as a table (a failed
    checkpoint included), and a picked checkpoint's own result with its kind's view."""
    from common.changepoint import analyse
    from schemas.sweeps import SweepResult

    lens = {**RESULTS["logit_lens"], "provenance": {"model": "m", "dtype": "float32", "device": "cpu",
                                                    "kind": "logit_lens", "params": {}, "versions": {}, "elapsed_s": 1.0}}
    steps, values = [0, 10, 100, 1000], [0.1, 0.12, 0.6, 0.65]
    series = [{"step": st, "job_id": f"j_s{st}", "status": "finished", "scalars": {"target_prob": v}, "result": lens}
              for st, v in zip(steps, values)]
    series[1] = {"step": 10, "job_id": "j_s10", "status": "failed", "error": {
        "type": "/problems/worker-lost", "title": "The worker running the job was lost", "status": 503}}
    done = [p for p in series if p["status"] == "finished"]
    a = analyse([p["step"] for p in done], [p["scalars"]["target_prob"] for p in done])
    scalar = {"steps": [p["step"] for p in done], "values": [p["scalars"]["target_prob"] for p in done],
              "largest_jump": vars(a.largest_jump), "change_point": vars(a.change_point)}
    sweep = SweepResult.model_validate({
        "kind": "logit_lens", "model": "m", "steps": steps, "finished": 3, "failed": 1, "canceled": 0,
        "series": series, "scalars": {"target_prob": scalar}, "results_included": True,
        "warnings": [{"type": "sweep-checkpoints-failed", "detail": "1 of 4 checkpoints did not finish"}],
    }).model_dump(mode="json")
    text = blank_page.evaluate(
        """(result) => { const el = document.getElementById('v'); el.replaceChildren();
             window.LanternViews.logit_lens(el, result, {}); return el.innerText; }""", sweep)
    assert "could not draw" not in text, text
    assert "sweep-checkpoints-failed" in text and "The worker running the job was lost" in text
    assert blank_page.locator("#v svg.sweep-chart").count() == 1
    assert blank_page.locator("#v svg.sweep-chart rect.change-point").count() == 1
    assert blank_page.locator("#v svg.sweep-chart line.largest-jump").count() == 1
    assert blank_page.locator("#v table.data").first.locator("tbody tr").count() == 4
    assert blank_page.locator("#v select option").count() == 3  # the finished checkpoints
    assert blank_page.locator("#v .sweep-point svg, #v .sweep-point table").count() >= 1  # logit_lens's own view
