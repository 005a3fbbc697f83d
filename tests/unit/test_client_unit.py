"""verify_webhook against the reference `standardwebhooks` package and the service's own signer;
the example requests validate; the CLI heatmap colours; the result schemas in the OpenAPI document."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from standardwebhooks import Webhook

from lantern.client import WebhookVerificationError, verify_webhook
from schemas.examples import EXAMPLES
from schemas.jobs import KINDS, parse_job
from service.cli_client import ansi_bg, heatmap

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _signed(body: str, msg_id: str = "msg_1", ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    from common.webhook_signature import sign  # the signer the webhook worker uses

    ts = int(time.time()) if ts is None else ts
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sign(secret, msg_id, ts, body)}


def test_verify_webhook_agrees_with_standardwebhooks():
    body = json.dumps({"type": "job.finished", "data": {"id": "abc", "status": "finished"}})
    headers = _signed(body)
    assert verify_webhook(body.encode(), headers, SECRET)["data"]["id"] == "abc"
    assert Webhook(SECRET).verify(body, {k.lower(): v for k, v in headers.items()})["data"]["id"] == "abc"
    # and the reference package's own signatures pass ours
    ts = int(time.time())
    ref = Webhook(SECRET).sign("msg_2", __import__("datetime").datetime.fromtimestamp(ts), body)
    assert verify_webhook(body, {"webhook-id": "msg_2", "webhook-timestamp": str(ts),
                                 "webhook-signature": "v1,bogus " + ref}, SECRET)


@pytest.mark.parametrize("change", ["body", "secret", "stale", "missing"])
def test_verify_webhook_refuses(change):
    body = '{"type":"job.finished"}'
    headers = _signed(body, ts=int(time.time()) - (3600 if change == "stale" else 0))
    if change == "body":
        body = '{"type":"job.failed"}'
    if change == "missing":
        headers.pop("Webhook-Signature")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode() if change == "secret" else SECRET
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret)


def test_examples_cover_every_kind_and_validate():
    assert set(EXAMPLES) == set(KINDS)
    for kind, body in EXAMPLES.items():
        assert parse_job(body).kind == kind


def test_openapi_carries_examples_and_result_schemas():
    from service.config import Settings
    from service.main import create_app

    doc = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    examples = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {k: v["value"] for k, v in examples.items()} == EXAMPLES
    schemas = doc["components"]["schemas"]
    by_kind = schemas["JobView"]["properties"]["result"]["x-result-by-kind"]
    assert set(by_kind) == set(KINDS) and all(ref.split("/")[-1] in schemas for ref in by_kind.values())
    assert "AttributionFaithfulness" in schemas and "CircuitFaithfulness" in schemas
    refs = {r.split("/")[-1] for r in json.dumps(doc).split('"$ref": "')[1:] for r in [r.split('"')[0]]}
    assert refs <= set(schemas)


def test_heatmap_colours_each_token():
    res = {"method": "integrated_gradients", "target_metric": "logprob", "input_tokens": ["<s>", " Mary", " and"],
           "target_tokens": [" Mary"], "scores": [[0.0, 1.0, -0.5]], "target_logprobs": [-0.1]}
    text = heatmap(res)
    assert text.count("\x1b[48;5;") == 3
    assert ansi_bg(1.0, 1.0) == 16 + 36 * 5 and ansi_bg(-1.0, 1.0) == 16 + 5 and ansi_bg(0.0, 1.0) == 231
    assert "\x1b[" not in heatmap(res, color=False)


def test_notebook_html_for_attention_and_other_kinds():
    from service.client import result_type

    provenance = {"model": "m", "dtype": "float32", "device": "cpu", "kind": "attention", "params": {}, "versions": {},
                  "elapsed_s": 0.1}
    res = result_type("attention").model_validate({"provenance": provenance,
        "tokens": ["<s>", "a", "b"], "token_classes": ["special", "other", "other"], "heads": [0, 1], "kv_heads": [0, 0],
        "layers": [{"layer": 0, "weights": [[[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]] * 2}]})
    html = res._repr_html_()
    assert html.count("<svg") == 2 and "L0" in html and "H1" in html
    assert result_type("generate").model_validate({"provenance": {**provenance, "kind": "generate"},
        "text": "x", "tokens": ["x"], "token_ids": [1], "token_logprobs": [-1.0], "finish_reason": "length",
        "prompt_tokens": 2})._repr_html_() is None  # no HTML: the notebook shows the repr
