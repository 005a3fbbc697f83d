"""head_redundancy over real HTTP with a real worker on the bundled models: SmolLM2 (LM loss, gradient and
exact importance, a measured pruning proposal) and MiniLM (embedding drift, exact importance only); a
request the model cannot run is a 422 at submit naming the field."""

import pytest

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "A dog chased the ball in the park.", "The capital of France is Paris.",
         "Water boils at one hundred degrees.", "She opened the window to let in the air.",
         "The train leaves at half past nine."]


def test_smollm2_redundancy_importance_and_pruning(service):
    res = service.run({"kind": "head_redundancy", "model": "smollm2-135m", "input": {"texts": TEXTS},
                       "params": {"layers": [0, -1], "tolerance": 0.01, "random_control": True}})["result"]
    assert res["metric"] == "lm_loss" and res["heads"][0] == [0, 0] and res["heads"][-1] == [29, 8]
    n = len(res["heads"])
    assert n == 18 and len(res["matrix"]) == n and all(res["matrix"][i][i] == 0 for i in range(n))
    assert all(0 <= x <= 1 for row in res["matrix"] for x in row)  # Jensen-Shannon distances
    p = res["pruning"]
    assert p["loss_before"] == pytest.approx(res["base_loss"]) and p["loss_after"] <= p["loss_before"] * 1.01
    assert p["n_heads"] == len(p["heads"]) and (p["next_loss"] is None or p["next_loss"] > p["loss_before"] * 1.01)
    for s in res["scores"]:
        assert s["gradient_importance"] >= 0 and s["loss_change"] == pytest.approx(s["masked_loss"] - res["base_loss"])
    assert -1 <= res["random_control"]["matrix_correlation"] <= 1
    assert res["masked_rows"] == len(TEXTS) * (n + p["evaluations"]) and res["provenance"]["kind"] == "head_redundancy"


def test_minilm_uses_the_embedding_drift(service):
    res = service.run({"kind": "head_redundancy", "model": "minilm-l6", "input": {"texts": TEXTS[:4]},
                       "params": {"distance": "hellinger", "layers": [0, 5]}})["result"]
    assert res["metric"] == "embedding_drift" and res["base_loss"] == 0 and len(res["heads"]) == 24
    assert all(s["gradient_importance"] is None and s["masked_loss"] >= 0 for s in res["scores"])
    assert res["pruning"]["loss_after"] <= 0.01


@pytest.mark.parametrize("model, params, loc", [
    ("minilm-l6", {"importance": ["gradient"], "prune": False}, ["body", "params", "importance"]),
    ("smollm2-135m", {"prune_on": "accuracy"}, ["body", "params", "prune_on"]),
    ("smollm2-135m", {"layers": [30]}, ["body", "params", "layers"]),
])
def test_what_the_model_cannot_run_is_a_422_at_submit(service, model, params, loc):
    r = service.submit({"kind": "head_redundancy", "model": model, "input": {"texts": TEXTS[:2]}, "params": params})
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["errors"]]
