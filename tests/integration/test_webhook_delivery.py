"""The webhook Deliverer against a real HTTP receiver and a real Redis: what each answer leads to
(delivered, retry with backoff, stop), redirects never followed, the receiver's body never kept,
and the SSRF check re-run on every attempt."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from redis import Redis

from common.webhook_events import build_entry
from common.webhook_queue import WebhookSettings
from delivery.webhooks import Deliverer
from schemas.keys import WEBHOOK_RETRIES, webhook_secret_key
from schemas.keys import webhook_status_key as status_key

SECRET = "whsec_" + "QUNNRS1zZWNyZXQtZm9yLXdlYmhvb2stdGVzdHMtMDE="


@pytest.fixture
def conn(private_redis):
    c = Redis.from_url(private_redis.url(0))
    c.flushdb()
    return c


class Answering:
    """Answers every POST with `code` (and `headers`); counts hits per path."""

    def __init__(self, code: int, headers: dict[str, str] | None = None, delay: float = 0.0):
        self.hits: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["content-length"]))
                outer.hits.append(self.path)
                time.sleep(delay)
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", "13")
                self.end_headers()
                self.wfile.write(b"secret-detail")

            def do_GET(self):  # noqa: N802  (where a followed redirect would land)
                outer.hits.append("GET " + self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _deliverer(conn, **over) -> Deliverer:
    settings = WebhookSettings(webhook_allowed_networks="127.0.0.0/8", webhook_timeout_s=0.5,
                               webhook_retry_base_s=10.0, webhook_max_attempts=3, **over)
    return Deliverer(conn, settings)


def _entry(conn, url: str, job: str = "job1") -> dict:
    conn.set(webhook_secret_key(job), SECRET)
    payload = {"kind": "generate", "model": "m", "webhook": {"url": url, "events": ["finished"]}}
    entry = build_entry(job, "acme", payload, "finished")
    entry["created"] -= 60  # past the wait for RQ to record the job's end
    return entry


@pytest.mark.parametrize("code,outcome", [(200, "delivered"), (204, "delivered"), (404, "failed"), (410, "failed"),
                                          (302, "failed"), (500, "retry"), (503, "retry"), (429, "retry")])
def test_each_answer_leads_where_it_should(conn, code, outcome):
    rx = Answering(code, {"Location": "http://127.0.0.1:1/elsewhere"} if code == 302 else None)
    entry = _entry(conn, rx.url)
    assert _deliverer(conn).handle(entry) == outcome
    assert rx.hits == ["/hook"]  # one POST; a redirect is not followed
    record = conn.get(status_key(entry["id"]))
    assert b"secret-detail" not in record and json.loads(record)["status"] == code
    assert conn.zcard(WEBHOOK_RETRIES) == (1 if outcome == "retry" else 0)
    rx.server.shutdown()


def test_retry_after_is_honoured_and_backoff_is_scheduled(conn):
    rx = Answering(429, {"Retry-After": "42"})
    entry = _entry(conn, rx.url)
    t0 = time.time()
    assert _deliverer(conn).handle(entry) == "retry"
    ((raw, due),) = conn.zrange(WEBHOOK_RETRIES, 0, -1, withscores=True)
    assert 41 <= due - t0 <= 43 and json.loads(raw)["attempt"] == 1
    rx.server.shutdown()


def test_timeouts_retry_then_give_up_after_max_attempts(conn):
    rx = Answering(200, delay=1.5)  # longer than the 0.5 s timeout
    entry = _entry(conn, rx.url)
    d = _deliverer(conn)
    assert d.handle(entry) == "retry"
    assert d.handle(entry) == "retry"
    assert d.handle(entry) == "failed"  # third attempt = webhook_max_attempts
    assert json.loads(conn.get(status_key(entry["id"])))["reason"] == "timeout"
    rx.server.shutdown()


def test_the_url_is_checked_again_at_delivery(conn):
    rx = Answering(200)
    entry = _entry(conn, rx.url)
    d = Deliverer(conn, WebhookSettings(webhook_allowed_networks=""))  # loopback no longer allowed
    assert d.handle(entry) == "refused" and rx.hits == []
    entry = _entry(conn, "https://169.254.169.254/latest/meta-data/", job="job2")
    assert d.handle(entry) == "refused"
    rx.server.shutdown()
