"""The API's edges over real HTTP (uvicorn subprocess, real Redis): a chunked body over
`max_body_bytes` is 413, failed authentications are rate limited per client address, a huge chat
is refused on its rendered size before any tokenizing, and every route (the main one included) is
labelled by its template in `/metrics`."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from schemas.keys import tokenizer_digest_key, tokenizer_key

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m"
BODY = {"kind": "generate", "model": MODEL, "input": {"prompt": "Hi"}, "params": {"max_new_tokens": 1}}
AUTH = {"Authorization": "Bearer ka"}
ENV = {"LANTERN_API_KEYS": "acme=ka,beta=kb", "LANTERN_AUTH_FAILURES_PER_MIN": "5",
       "LANTERN_RATE_LIMIT_PER_S": "100000", "LANTERN_RATE_LIMIT_BURST_PER_MIN": "1000000"}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture
def api(api_process):
    with api_process(3, **ENV) as proc:
        yield proc


def _samples(text: str, name: str) -> list[dict[str, str]]:
    return [s.labels for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_metrics_label_every_route_by_its_template(api):
    with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as c:
        job = c.post("/v1/jobs", json=BODY)
        assert job.status_code == 202, job.text
        assert c.get(f"/v1/jobs/{job.json()['id']}").status_code == 200
        assert c.delete(f"/v1/jobs/{job.json()['id']}").status_code == 202
        assert c.get("/v1/no-such-route").status_code == 404
        samples = _samples(c.get("/metrics").text, "lantern_http_requests_total")
    seen = {(s["method"], s["route"], s["status"]) for s in samples}
    assert ("POST", "/v1/jobs", "202") in seen, seen
    assert ("GET", "/v1/jobs/{job_id}", "200") in seen and ("DELETE", "/v1/jobs/{job_id}", "202") in seen
    assert ("GET", "unmatched", "404") in seen  # only a path no route matches
    assert not any(s["route"] == "unmatched" and s["method"] == "POST" for s in samples)


def test_a_chunked_body_over_max_body_bytes_is_413(api):
    def chunks():  # Transfer-Encoding: chunked, no Content-Length
        yield b'{"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "'
        for _ in range(32):
            yield b"a" * 65536
        yield b'"}}'

    with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=30) as c:
        r = c.post("/v1/jobs", content=chunks())
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("body-too-large") and "max_body_bytes" in r.json()["detail"]
        # a chunked body within the limit is read as usual
        ok = c.post("/v1/jobs", content=iter([json.dumps(BODY).encode()]))
        assert ok.status_code == 202, ok.text


def test_failed_authentications_are_rate_limited_per_client_address(api):
    with httpx.Client(base_url=api.base_url, timeout=30) as c, \
            httpx.Client(base_url=api.base_url, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
        wrong = {"Authorization": "Bearer guess"}
        assert [c.get("/v1/jobs", headers=wrong).status_code for _ in range(5)] == [401] * 5
        limited = c.get("/v1/jobs", headers=wrong)
        assert limited.status_code == 429, limited.text
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["type"].endswith("too-many-failed-authentications")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Blocked means blocked: a right guess from that address is not told apart from a wrong one.
        assert c.get("/v1/jobs", headers=AUTH).status_code == 429
        assert c.get("/healthz").status_code == 200  # public routes need no key
        # Another address is not affected, and a valid key never counts as a failure.
        assert other.get("/v1/jobs", headers=AUTH).status_code == 200
        assert [other.get("/v1/jobs", headers=AUTH).status_code for _ in range(10)] == [200] * 10
        assert other.get("/v1/jobs", headers=wrong).status_code == 401


def _publish_tokenizer(conn: Redis) -> None:
    """What a worker publishes for the API (workers/main.py): a tokenizers JSON and a chat
    template; here a small byte-level BPE trained in-process and a ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["The capital of France is Paris."] * 4,
                            trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    blob = json.dumps({"tokenizer": tok.to_str(), "chat_template": CHATML, "special": {}})
    conn.set(tokenizer_key(MODEL), blob)
    conn.set(tokenizer_digest_key(MODEL), "test")


def test_a_huge_chat_is_refused_on_its_rendered_size_before_tokenizing(api):
    _publish_tokenizer(Redis.from_url(api.env["LANTERN_REDIS_URL"]))
    messages = [{"role": "user", "content": "word " * 6000} for _ in range(32)]  # ~1 MB of chat
    body = {**BODY, "input": {"messages": messages}}
    with httpx.Client(base_url=api.base_url, headers=AUTH, timeout=60) as c:
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["loc"] == ["body", "input", "messages"] and error["ctx"]["limit"] == "max_prompt_chars"
        assert error["ctx"]["value"] > error["ctx"]["limit_value"]
        # a chat within the size is counted in tokens as before
        small = c.post("/v1/jobs", json={**BODY, "input": {"messages": [{"role": "user", "content": "Hi"}]}})
        assert small.status_code == 202, small.text
        long_chat = {"messages": [{"role": "user", "content": "Paris " * 2000}]}
        long = c.post("/v1/jobs", json={**BODY, "input": long_chat})
        assert long.status_code == 422 and long.json()["errors"][0]["ctx"]["limit"] == "max_prompt_tokens", long.text
        # the cheap checks refuse first: with a setting's limit broken too, no tokens are counted
        both = c.post("/v1/jobs", json={**BODY, "input": long_chat, "params": {"max_new_tokens": 1000}})
        assert both.status_code == 422, both.text
        assert "max_new_tokens" in both.text and "max_prompt_tokens" not in both.text
