"""Webhook signing, backoff and the SSRF guard (delivery/webhooks.py, common/webhook_urls.py).

Signatures are checked with the reference `standardwebhooks` package; the guard is checked on
literal addresses of every refused class and on names resolved by a stub resolver (no DNS)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket

import pytest
from standardwebhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from common.webhook_queue import WebhookSettings
from common.webhook_signature import sign
from common.webhook_urls import UnsafeURL, check_url, is_public, parse_networks
from delivery.webhooks import backoff, message_id

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def test_signature_verifies_with_the_reference_package():
    body = json.dumps({"type": "job.finished", "data": {"id": "abc"}})
    ts = int(__import__("time").time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign(SECRET, "msg_1", ts, body)}
    assert Verifier(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):  # tampered body
        Verifier(SECRET).verify(body.replace("abc", "abd"), headers)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):  # another secret
        Verifier(other).verify(body, headers)


def test_message_id_is_stable_per_job_and_event():
    assert message_id("j1", "finished") == message_id("j1", "finished")
    assert message_id("j1", "finished") != message_id("j1", "failed") != message_id("j2", "failed")


def test_backoff_grows_with_full_jitter_and_honours_retry_after():
    s = WebhookSettings(webhook_retry_base_s=1.0, webhook_retry_max_s=30.0)
    for attempt in range(1, 8):
        ceiling = min(30.0, 2 ** (attempt - 1))
        delays = [backoff(attempt, s) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered
    assert backoff(1, s, retry_after=7.0) == 7.0
    assert backoff(1, s, retry_after=10_000.0) == 30.0  # capped


REFUSED = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
           "224.0.0.1", "240.0.0.1", "192.0.2.1", "::1", "fc00::1", "fd12::1", "fe80::1", "::ffff:127.0.0.1",
           "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe", "::127.0.0.1", "2001:db8::1"]


@pytest.mark.parametrize("addr", REFUSED)
def test_non_public_addresses_are_refused(addr):
    assert not is_public(ipaddress.ip_address(addr))
    host = f"[{addr}]" if ":" in addr else addr
    with pytest.raises(UnsafeURL):
        check_url(f"https://{host}/hook", [])


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(addr):
    assert is_public(ipaddress.ip_address(addr))


def _resolver(*addresses):
    def resolve(host, port, type=None):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return resolve


def test_a_name_is_checked_by_every_address_it_resolves_to():
    ok = check_url("https://hooks.example.com/x?y=1", [], resolve=_resolver("93.184.216.34"))
    assert (ok.address, ok.host, ok.port, ok.path) == ("93.184.216.34", "hooks.example.com", 443, "/x?y=1")
    with pytest.raises(UnsafeURL, match="169.254.169.254"):  # one bad address is enough
        check_url("https://evil.example.com/", [], resolve=_resolver("93.184.216.34", "169.254.169.254"))


def test_odd_numeric_forms_resolve_to_what_they_mean():
    for host in ("2130706433", "0x7f.1", "017700000001"):  # all 127.0.0.1 to getaddrinfo
        with pytest.raises(UnsafeURL):
            check_url(f"https://{host}/", [])


def test_scheme_credentials_and_allow_list():
    with pytest.raises(UnsafeURL, match="scheme"):
        check_url("ftp://8.8.8.8/", [])
    with pytest.raises(UnsafeURL, match="credentials"):
        check_url("https://user:pw@8.8.8.8/", [])
    with pytest.raises(UnsafeURL, match="http is allowed only"):
        check_url("http://8.8.8.8/", [])  # public, but http
    nets = parse_networks("127.0.0.0/8, 10.0.0.0/8")
    assert check_url("http://127.0.0.1:8080/in", nets).address == "127.0.0.1"
    assert check_url("https://10.2.3.4/in", nets).port == 443
    with pytest.raises(UnsafeURL):
        check_url("http://192.168.0.1/", nets)


def test_the_webhook_worker_is_light():
    """The webhook worker (and the reaper it runs) import no torch or transformers."""
    import subprocess
    import sys

    code = ("import sys, delivery.webhook_worker, delivery.reaper, service.main; "
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
