"""API keys -> tenants (service/auth.py): parsing, hashing, and the middleware's answers."""

from __future__ import annotations

import hashlib

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.auth import ApiKeyAuth, Tenants, parse_secrets


def _app(tenants: Tenants) -> TestClient:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict:
        return {"tenant": getattr(request.state, "tenant", "anonymous")}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    app.add_middleware(ApiKeyAuth, tenants=tenants)
    return TestClient(app)


def test_pairs_map_keys_to_tenants_and_keep_only_digests():
    t = Tenants.from_settings("acme=k-acme-1, beta=k-beta-1,acme=k-acme-2", None)
    assert t.tenant_for("k-acme-1") == "acme" and t.tenant_for("k-acme-2") == "acme"
    assert t.tenant_for("k-beta-1") == "beta" and t.tenant_for("nope") is None
    assert "k-acme-1" not in repr(t.by_digest)  # only digests are held
    assert hashlib.sha256(b"k-beta-1").hexdigest() in t.by_digest


def test_keys_file_holds_sha256_digests(tmp_path):
    f = tmp_path / "keys"
    f.write_text(f"# tenant=sha256(key)\nacme={hashlib.sha256(b'secret-a').hexdigest()}\n\n"
                 f"beta = {hashlib.sha256(b'secret-b').hexdigest().upper()}  # upper case ok\n")
    t = Tenants.from_settings(None, str(f))
    assert t.tenant_for("secret-a") == "acme" and t.tenant_for("secret-b") == "beta"
    f.write_text("acme=not-a-digest\n")
    with pytest.raises(ValueError, match="SHA-256"):
        Tenants.from_settings(None, str(f))


@pytest.mark.parametrize("bad", ["acme", "=key", "bad tenant=key", "a/b=key"])
def test_malformed_entries_are_refused(bad):
    with pytest.raises(ValueError):
        Tenants.from_settings(bad, None)


def test_open_mode_when_no_keys():
    t = Tenants.from_settings(None, None)
    assert t.open
    assert _app(t).get("/whoami").json() == {"tenant": "anonymous"}


def test_middleware_answers_401_problem_without_a_valid_key():
    client = _app(Tenants.from_settings("acme=key-one", None))
    for headers in ({}, {"Authorization": "key-one"}, {"Authorization": "Basic key-one"},
                    {"Authorization": "Bearer "}, {"Authorization": "Bearer key-two"}):
        r = client.get("/whoami", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["status"] == 401 and "key-one" not in r.text
    r = client.get("/whoami", headers={"Authorization": "Bearer key-one"})
    assert r.status_code == 200 and r.json() == {"tenant": "acme"}
    assert client.get("/healthz").status_code == 200  # public


def test_webhook_secrets_parse():
    assert parse_secrets("acme=whsec_abc, beta=whsec_def") == {"acme": "whsec_abc", "beta": "whsec_def"}
    assert parse_secrets(None) == {}
