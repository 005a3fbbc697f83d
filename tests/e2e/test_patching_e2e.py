"""activation_patching over real HTTP on the real SmolLM2: the IOI pair's residual grid shows the
answer carried at the second subject's position in early layers and at the last position in late
ones (Wang et al. 2022); a pair of unequal lengths fails with both token lists."""

import pytest

pytestmark = pytest.mark.slow

PAIR = {"clean_prompt": "When Mary and John went to the store, John gave a drink to",
        "corrupted_prompt": "When Mary and John went to the store, Anne gave a drink to",
        "answer": " Mary", "wrong_answer": " John"}


def test_ioi_residual_patching_moves_from_the_subject_to_the_last_position(service):
    res = service.run({"kind": "activation_patching", "model": "smollm2-135m", "input": PAIR,
                       "params": {"component": "residual", "layers": [0, 10, 27]}})["result"]
    tokens = res["clean_tokens"]
    s2, end = len(tokens) - 5, len(tokens) - 1
    assert tokens[s2] == " John" and res["axes"] == ["layer", "position"] and res["layers"] == [0, 10, 27]
    assert res["clean_metric"] > res["corrupted_metric"] + 1  # IO above S on the clean prompt
    early, mid, late = res["effects"]
    assert early[s2] == pytest.approx(1.0, abs=1e-3) and mid[s2] > 0.9  # the only differing position
    assert late[end] > 0.8 and abs(late[s2]) < 0.2  # moved to the last position
    assert res["forwards"] < 3 + 3 * len(tokens) and res["positions_computed"] < res["positions_naive"]
    assert res["provenance"]["kind"] == "activation_patching"


def test_attribution_patching_with_exact_checks(service):
    res = service.run({"kind": "activation_patching", "model": "smollm2-135m", "input": PAIR,
                       "params": {"component": "attn_head", "method": "attribution", "verify_top_k": 4}})["result"]
    assert res["axes"] == ["layer", "head"] and len(res["effects"]) == 30 and len(res["effects"][0]) == 9
    assert len(res["checks"]) == 4 and res["forwards"] <= 3 + 4 + 4


def test_unequal_lengths_fail_with_both_token_lists(service):
    body = {"kind": "activation_patching", "model": "smollm2-135m",
            "input": {**PAIR, "corrupted_prompt": "When Mary and John went to the big store, Anne gave a drink to"}}
    r = service.submit(body)
    assert r.status_code == 202, r.text
    job = service.wait(r.json()["id"])
    assert job["status"] == "failed" and job["error"]["status"] == 422
    (err,) = job["error"]["errors"]
    assert err["type"] == "length_mismatch" and err["loc"] == ["input", "corrupted_prompt"]
    assert err["ctx"]["corrupted_tokens"][-1] == " to"
