"""Webhooks end to end: a receiver that fails 3 times then succeeds gets the delivery, the
signature verifies with the `standardwebhooks` package, a deduplicating receiver sees each
`webhook-id` once; private and metadata URLs are refused at submit (422); a killed job's webhook
says it failed (see test_chaos.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook as Verifier

from schemas.keys import WEBHOOK_QUEUE, WEBHOOK_RETRIES, webhook_processing_key, webhook_status_key
from tests.attack.conftest import SECRETS, gen

pytestmark = pytest.mark.slow


class Receiver:
    """Fails the first `fail` POSTs with 503 (then 500, 429), then accepts; dedups by webhook-id."""

    def __init__(self, fail: int = 3):
        self.fail = fail
        self.posts: list[tuple[dict, bytes]] = []
        self.accepted: dict[str, dict] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers), body))
                    n = len(receiver.posts)
                    if n <= receiver.fail:
                        code = (503, 500, 429)[(n - 1) % 3]
                    else:
                        code = 200
                        hid = self.headers["webhook-id"]
                        receiver.accepted.setdefault(hid, {"headers": dict(self.headers), "body": body})
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("content-length", "18")
                self.end_headers()
                self.wfile.write(b"receiver-internals")

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_accepted(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.accepted)} of {n} webhooks accepted; posts: {len(self.posts)}")
            time.sleep(0.05)


@pytest.fixture
def receiver():
    r = Receiver(fail=3)
    yield r
    r.server.shutdown()


def _until_delivery_settled(stack, timeout: float = 30) -> None:
    """Until no delivery is queued, waiting for a retry, or held by a webhook worker."""
    deadline = time.monotonic() + timeout
    while (stack.redis.llen(WEBHOOK_QUEUE) or stack.redis.zcard(WEBHOOK_RETRIES)
           or any(stack.redis.llen(k) for k in stack.redis.scan_iter(webhook_processing_key("*")))):
        assert time.monotonic() < deadline, "webhook deliveries still pending"
        time.sleep(0.05)


def test_failing_receiver_gets_one_signed_delivery(stack, receiver):
    with stack.client("acme") as c:
        r = c.post("/v1/jobs", json=gen(webhook={"url": receiver.url, "events": ["finished"]}))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    assert stack.wait(job_id)["status"] == "finished"
    receiver.wait_accepted(1)
    _until_delivery_settled(stack)  # nothing pending: a duplicate would have been sent by now
    assert len(receiver.posts) == 4  # 3 failures (503, 500, 429) and the success, nothing after
    ids = {h["webhook-id"] for h, _ in receiver.posts}
    assert len(ids) == 1  # the same id on every retry: the receiver can deduplicate
    (hid, got), = receiver.accepted.items()
    payload = Verifier(SECRETS["acme"]).verify(got["body"], got["headers"])
    assert payload["type"] == "job.finished"
    data = payload["data"]
    assert data["id"] == job_id and data["status"] == "finished" and data["links"]["self"] == f"/v1/jobs/{job_id}"
    assert "text" in data["result"]  # small result rides along
    status = json.loads(stack.redis.get(webhook_status_key(hid)))
    assert status == {"outcome": "delivered", "attempts": 4, "status": 200, "reason": "ok"}
    assert b"receiver-internals" not in stack.redis.get(webhook_status_key(hid))


def test_own_secret_is_used_and_kept_out_of_the_payload(stack):
    receiver = Receiver(fail=0)
    secret = "whsec_" + "bXktb3duLXNlY3JldC1mb3ItdGhpcy1qb2ItMDAwMDA="
    with stack.client("beta") as c:  # beta has no configured secret
        no_secret = c.post("/v1/jobs", json=gen(webhook={"url": receiver.url}))
        assert no_secret.status_code == 422 and "webhook" in no_secret.text and "secret" in no_secret.text
        r = c.post("/v1/jobs", json=gen(webhook={"url": receiver.url, "events": ["started", "finished"],
                                                 "secret": secret}))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    raw = stack.redis.hget(f"rq:job:{job_id}", "data") or b""
    assert secret.encode() not in raw and b"bXktb3du" not in raw  # not stored in the job
    assert stack.wait(job_id, tenant="beta")["status"] == "finished"
    receiver.wait_accepted(2)
    types = sorted(Verifier(secret).verify(v["body"], v["headers"])["type"] for v in receiver.accepted.values())
    assert types == ["job.finished", "job.started"]
    receiver.server.shutdown()


def test_canceling_a_queued_job_sends_its_canceled_webhook(stack):
    receiver = Receiver(fail=0)
    body = gen(webhook={"url": receiver.url, "events": ["canceled"]})
    body["model"] = "smollm2-135m"  # in the registry, but no worker of this stack holds it: stays queued
    with stack.client("acme") as c:
        job_id = c.post("/v1/jobs", json=body).json()["id"]
        assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "canceled"
    receiver.wait_accepted(1, timeout=30)
    (got,) = receiver.accepted.values()
    payload = Verifier(SECRETS["acme"]).verify(got["body"], got["headers"])
    assert payload["type"] == "job.canceled" and payload["data"]["id"] == job_id
    receiver.server.shutdown()


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/hook", "https://192.168.1.10/hook",
    "https://[::ffff:169.254.169.254]/", "https://[fd00::1]/", "https://100.64.1.1/", "https://[::1]/x",
    "http://example.com/hook", "https://2852039166/", "https://0xa9fea9fe/", "ftp://example.com/",
])
def test_private_and_metadata_urls_are_refused_at_submit(stack, url):
    with stack.client("acme") as c:
        r = c.post("/v1/jobs", json=gen(webhook={"url": url}))
    assert r.status_code == 422, (url, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert any(e["loc"][-1] == "url" for e in r.json()["errors"]), r.text
