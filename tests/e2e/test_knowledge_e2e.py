"""Knowledge neurons over real HTTP, a real worker and the real SmolLM2: locate a fact, edit it,
generate with and without the edit, read and delete the edit set."""

import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
FACT = {"prompts": ["The capital of France is", "France's capital city is"], "answer": " Paris"}
PROMPT = "The capital of France is"


def generate(service, edits=None):
    params = {"max_new_tokens": 3, **({"edits": edits} if edits else {})}
    return service.run({"kind": "generate", "model": MODEL, "input": {"prompt": PROMPT}, "params": params})["result"]


def test_locate_edit_generate_delete(service):
    located = service.run({"kind": "knowledge_neurons", "model": MODEL,
                           "input": {**FACT, "control_prompts": ["Water is made of hydrogen and"]},
                           "params": {"n_steps": 4, "layers": list(range(20, 30))}}, timeout=600)["result"]
    neurons = located["neurons"]
    assert neurons and located["summary"]["suppressed"] < located["summary"]["random_suppressed"]
    assert located["filtered_neurons"] is not None  # filter_controls is on by default with control prompts
    assert located["provenance"]["params"]["filter_controls"] is True
    assert located["provenance"]["kind"] == "knowledge_neurons"

    before = generate(service)
    assert before["text"].strip().startswith("Paris")

    edit = service.run({"kind": "knowledge_edit", "model": MODEL,
                        "input": {**FACT, "new_answer": " Rome", "neurons": neurons,
                                  "paraphrases": ["The capital city of France is"],
                                  "control_prompts": ["The chemical symbol for gold is"]},
                        "params": {"operation": "update"}})["result"]
    edit_id = edit["edit_id"]
    assert edit["reliability"]["score"] == 1.0 and edit["reliability"]["new_prob_after"] > 0.5
    assert edit["generalization"]["prompts"][0]["prompt"] == "The capital city of France is"
    assert 0.0 <= edit["locality"]["score"] <= 1.0

    edited = generate(service, [edit_id])
    assert edited["text"].strip().startswith("Rome")
    after = generate(service)  # the next job runs without the edit: unchanged
    assert {k: v for k, v in after.items() if k != "provenance"} == {k: v for k, v in before.items() if k != "provenance"}

    # the same edit set applies to attribution (and lowers the old answer there)
    attr = {"kind": "attribution", "model": MODEL, "input": {"prompt": PROMPT, "target": " Paris"},
            "params": {"method": "saliency"}}
    plain = service.run(attr)["result"]["target_logprobs"][0]
    with_edit = service.run({**attr, "params": {"method": "saliency", "edits": [edit_id]}})["result"]["target_logprobs"][0]
    assert with_edit < plain - 1.0

    view = service.http.get(f"/v1/edits/{edit_id}").json()
    assert view["model"] == MODEL and view["data"]["operation"] == "update" and view["data"]["deltas"]
    assert edit_id in [a["id"] for a in service.http.get("/v1/edits").json()["items"]]
    assert service.http.delete(f"/v1/edits/{edit_id}").status_code == 204
    assert service.http.get(f"/v1/edits/{edit_id}").status_code == 404
    r = service.submit({"kind": "generate", "model": MODEL, "input": {"prompt": PROMPT},
                        "params": {"edits": [edit_id]}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "params", "edits", 0], r.text


def test_bad_knowledge_requests_are_422(service):
    r = service.submit({"kind": "knowledge_neurons", "model": MODEL, "input": {**FACT},
                        "params": {"n_steps": 100000}})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    for bad in ({"contrast_ratio": 0}, {"filter_controls": "sometimes"}, {"filter_control": True}):
        r = service.submit({"kind": "knowledge_neurons", "model": MODEL, "input": {**FACT}, "params": bad})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
        assert next(iter(bad)) in r.text
    r = service.submit({"kind": "generate", "model": MODEL, "input": {"prompt": PROMPT},
                        "params": {"edits": ["not-an-edit"]}})
    assert r.status_code == 422
    r = service.submit({"kind": "knowledge_edit", "model": MODEL, "input": {**FACT}, "params": {"operation": "update"}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "input", "new_answer"], r.text
