"""The IOI circuit over real HTTP on the real SmolLM2, on a few generated pairs (the full 64-pair
study and its figures are in docs/circuits.md and BENCHMARKS.md)."""

import pytest

pytestmark = pytest.mark.slow


def test_the_ioi_circuit_job_finds_name_movers_on_smollm2(service):
    view = service.run({"kind": "circuit", "model": "smollm2-135m",
                        "input": {"dataset": {"name": "ioi", "n": 4, "seed": 0}}}, timeout=900)
    res = view["result"]
    assert len(res["pairs"]) == 4 and res["behaviour"]["io_above_s"] >= 0.75
    assert res["behaviour"]["logit_diff"] > res["behaviour"]["corrupted_logit_diff"]
    movers = [h for h in res["heads"] if h["role"] == "name_mover"]
    assert movers and all(h["path_effect"] <= -0.04 for h in movers)
    assert {"end_to_io", "end_to_s2"} <= set(movers[0]["attention"]) and movers[0]["copy_score"] is not None
    assert len(res["direct_effects"]) == 30 and len(res["direct_effects"][0]) == 9
    f = res["faithfulness"]
    assert f["ablation"] == "mean" and f["share_of_heads"] < 0.2 and f["ratio"] == pytest.approx(
        f["circuit"] / f["model"])
    assert {"logits"} <= {n["id"] for n in res["graph"]["nodes"]} and res["graph"]["edges"]
    assert res["provenance"]["kind"] == "circuit"


def test_a_bad_dataset_is_refused_at_submit(service):
    r = service.submit({"kind": "circuit", "model": "smollm2-135m", "input": {"dataset": {"name": "ioi", "n": 0}}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"][-1] == "n"
