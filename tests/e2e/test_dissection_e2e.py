"""attention, logit_lens, ffn_projection and attention_patterns over real HTTP with a real worker
holding both bundled models; an attention result over the size limit is a 422 at submit that says
which selection fits."""

import pytest

pytestmark = pytest.mark.slow

PROMPT = "When Mary and John went to the store, John gave a drink to Mary."
MODELS = ("smollm2-135m", "minilm-l6")
PROBLEM = "application/problem+json"


@pytest.mark.parametrize("model", MODELS)
def test_dissection_kinds_finish_on_both_bundled_models(service, model):
    att = service.run({"kind": "attention", "model": model, "input": {"prompt": PROMPT},
                       "params": {"layers": [0, -1], "heads": [0, 1]}})["result"]
    n = len(att["tokens"])
    assert [layer["layer"] for layer in att["layers"]] == [0, 5 if model == "minilm-l6" else 29]
    for layer in att["layers"]:
        assert len(layer["weights"]) == len(layer["norms"]) == 2 and len(layer["summed_norms"]) == n
        assert all(abs(sum(row) - 1) < 1e-4 for head in layer["weights"] for row in head)
        assert min(v for head in layer["norms"] for row in head for v in row) >= 0
    assert att["provenance"]["kind"] == "attention" and att["provenance"]["params"]["heads"] == [0, 1]

    agg = service.run({"kind": "attention", "model": model, "input": {"prompt": PROMPT},
                       "params": {"aggregate": "token_class"}})["result"]
    assert agg["layers"] == [] and agg["token_class"][0]["heads"][0]["norm"].keys() == {"special", "punctuation",
                                                                                       "other"}

    lens = service.run({"kind": "logit_lens", "model": model, "input": {"prompt": PROMPT, "target": " Mary"},
                        "params": {"positions": [-1], "include_mid": True, "top_k": 3}})["result"]
    assert len(lens["layers"]) == 2 * (6 if model == "minilm-l6" else 30)
    assert lens["unembedding"] == ("input_embeddings" if model == "minilm-l6" else "lm_head")

    ffn = service.run({"kind": "ffn_projection", "model": model, "input": {"prompt": PROMPT},
                       "params": {"layers": [-1], "top_values": 4, "top_tokens": 3}})["result"]
    (layer,) = ffn["layers"]
    assert len(layer["sub_updates"]) == 4 and len(layer["sub_updates"][0]["top_tokens"]) == 3
    assert ffn["position"] == len(ffn["tokens"]) - 1 and ffn["n_values"] == 1536

    pat = service.run({"kind": "attention_patterns", "model": model,
                       "input": {"prompts": [PROMPT, "The capital of France is Paris. It is large."]}})["result"]
    assert abs(sum(pat["distribution"].values()) - 1) < 1e-9 and len(pat["grid"]) == len(pat["layers"])


def test_models_list_the_dissection_kinds(service):
    models = {m["id"]: m for m in service.http.get("/v1/models").json()["models"]}
    for model in MODELS:
        assert {"attention", "logit_lens", "ffn_projection", "attention_patterns"} <= set(models[model]["kinds"])


def test_attention_over_the_size_limit_is_a_422_naming_what_fits(service):
    long = "The history of the city is long and full of events. " * 38  # ~500 tokens
    r = service.submit({"kind": "attention", "model": "smollm2-135m", "input": {"prompt": long},
                        "params": {"measures": ["summed_norms"]}})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    (err,) = r.json()["errors"]
    assert err["type"] == "result_too_large" and err["loc"] == ["body", "params", "layers"]
    fits = err["ctx"]["fits"]
    assert 1 <= len(fits["layers"]) < 30 and fits["aggregate"] == "token_class"
    view = service.run({"kind": "attention", "model": "smollm2-135m", "input": {"prompt": long},
                        "params": {"measures": ["summed_norms"], "layers": fits["layers"]}})
    assert len(view["result"]["layers"]) == len(fits["layers"])


def test_dissection_bad_input_is_a_problem(service):
    r = service.submit({"kind": "attention", "model": "minilm-l6", "input": {"prompt": PROMPT},
                        "params": {"measures": ["colour"]}})
    assert r.status_code == 422 and "measures" in r.text
    # what the model's published facts rule out is a 422 at submit, not a failed job after a 202
    r = service.submit({"kind": "attention", "model": "minilm-l6", "input": {"prompt": PROMPT},
                        "params": {"layers": [6]}})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    (err,) = r.json()["errors"]
    assert err["loc"] == ["body", "params", "layers"] and "n_layers=6" in err["msg"]
    r = service.submit({"kind": "logit_lens", "model": "minilm-l6",
                        "input": {"messages": [{"role": "user", "content": "hi there"}]}})
    assert r.status_code == 422 and "chat template" in r.text and r.json()["errors"][0]["loc"][-1] == "messages"
    r = service.submit({"kind": "logit_lens", "model": "minilm-l6", "input": {"prompt": PROMPT},
                        "params": {"positions": [0, 100]}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "params", "positions"], r.text
