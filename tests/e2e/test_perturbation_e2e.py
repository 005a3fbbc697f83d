"""Perturbation attribution and faithfulness over real HTTP, a real worker and the real SmolLM2."""

import pytest

pytestmark = pytest.mark.slow

IOI = {"kind": "attribution", "model": "smollm2-135m",
       "input": {"prompt": "When Mary and John went to the store, John gave a drink to", "target": " Mary"}}
PROBLEM = "application/problem+json"


def name_positions(tokens):
    johns = [i for i, t in enumerate(tokens) if t.strip() == "John"]
    assert len(johns) == 2
    return tokens.index(" Mary"), johns


def test_occlusion_with_faithfulness(service):
    res = service.run({**IOI, "params": {"method": "occlusion", "faithfulness": True}})["result"]
    scores = res["scores"][0]
    assert res["target_tokens"] == [" Mary"] and len(scores) == len(res["input_tokens"])
    # the model copies the indirect object: removing " Mary" costs more than removing either " John"
    mary, johns = name_positions(res["input_tokens"])
    assert scores[mary] > 1.0 and all(scores[mary] > scores[j] for j in johns)
    assert res["replacement"].startswith("pad token") and res["perturbation"]["forwards"] >= 1
    assert res["perturbation"]["positions_run"] < res["perturbation"]["positions_plain"]
    fa = res["faithfulness"]
    assert fa["comprehensiveness"][0] > 1.0 and fa["deletion_auc"] < fa["random_deletion_auc"]
    assert res["provenance"]["params"]["method"] == "occlusion"


def test_kernel_shap_adds_up_and_lime_fits(service):
    shap = service.run({**IOI, "params": {"method": "kernel_shap", "n_samples": 64, "seed": 1}})["result"]
    total = sum(shap["scores"][0])
    eff = shap["efficiency"]
    assert abs(total - (eff["f_input"][0] - shap["base_value"][0])) < 1e-3 and abs(eff["delta"][0]) < 1e-3
    body = {**IOI, "params": {"method": "lime", "n_samples": 64, "granularity": "word", "seed": 7}}
    lime = service.run(body)["result"]
    assert lime["unit_spans"] and len(lime["scores"][0]) == len(lime["input_tokens"]) == 14
    assert lime["surrogate"]["r2"][0] > 0.5  # the surrogate explains most of the weighted variance
    assert service.run(body)["result"]["scores"] == lime["scores"]  # same seed, same answer


def test_over_max_samples_is_a_problem_naming_the_limit(service):
    r = service.submit({**IOI, "params": {"method": "lime", "n_samples": 60000}})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert "n_samples" in r.text and "max_samples" in r.text
    r = service.submit({**IOI, "params": {"method": "occlusion", "window": 0}})
    assert r.status_code == 422 and "window" in r.text
