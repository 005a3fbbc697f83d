"""Cross-tenant matrix over every route and verb of the OpenAPI spec: another tenant's job, steering
profile or edit set reads as absent (404, not 403), listing shows only one's own, no route leaks an id
or content of another tenant; without a key every non-public route is 401 problem+json."""

from __future__ import annotations

import re

import pytest

from schemas.artifacts import ARTIFACT_KINDS
from tests.attack.conftest import MODEL, gen

pytestmark = pytest.mark.slow
PUBLIC = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def owned(stack):
    """One finished job and one artifact of each kind, all owned by `acme`."""
    from common.artifacts import ArtifactStore

    with stack.client("acme") as c:
        r = c.post("/v1/jobs", json=gen())
        assert r.status_code == 202, r.text
        job = r.json()["id"]
    assert stack.wait(job)["status"] == "finished"
    store = ArtifactStore(stack.redis, "acme")
    ids = {kind: store.put(kind, MODEL, {"secret_marker": "acme-only"}).id for kind in ARTIFACT_KINDS}
    return {"jobs": job, **ids}  # every artifact kind the API serves


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for verb in item:
            if verb in ("get", "post", "put", "patch", "delete"):
                yield path, verb


def _resource(path: str) -> str | None:
    m = re.match(r"^/v1/([a-z-]+)", path)
    return m.group(1) if m else None


def test_every_route_and_verb_hides_other_tenants(stack, owned):
    with stack.client("beta") as beta, stack.client("acme") as acme:
        spec = beta.get("/openapi.json").json()
        ops = list(_operations(spec))
        checked = 0
        for path, verb in ops:
            # a model id names the shared registry, no tenant's data (`:explain` makes jobs: covered as jobs)
            if "{" not in path or path.startswith("/v1/models/"):
                continue
            resource = _resource(path)
            assert resource in owned, f"a route with an id that the matrix does not cover: {verb} {path}"
            url = re.sub(r"\{[^}]+\}", owned[resource], path)
            r = beta.request(verb.upper(), url)
            assert r.status_code == 404, (verb, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert owned[resource] not in r.text and "acme" not in r.text
            checked += 1
        assert checked >= 2 * (1 + len(ARTIFACT_KINDS))  # jobs and every artifact kind: GET and DELETE each
        # the owner still sees all three (beta's DELETE did nothing)
        for resource, rid in owned.items():
            assert acme.get(f"/v1/{resource}/{rid}").status_code == 200, resource
        # lists: only one's own
        for resource in owned:
            mine = acme.get(f"/v1/{resource}").text
            theirs = beta.get(f"/v1/{resource}")
            assert theirs.status_code == 200
            assert owned[resource] in mine and owned[resource] not in theirs.text


def test_without_a_key_every_route_but_the_public_ones_is_401(stack, owned):
    with stack.client(None) as anon, stack.client("acme") as acme:
        spec = acme.get("/openapi.json").json()
        assert anon.get("/openapi.json").status_code == 401
        for path, verb in _operations(spec):
            url = re.sub(r"\{[^}]+\}", "x", path)
            r = anon.request(verb.upper(), url, headers={"Authorization": "Bearer wrong-key"})
            if path in PUBLIC:
                assert r.status_code in (200, 503), path
            else:
                assert r.status_code == 401, (verb, path, r.status_code)
                assert r.headers["content-type"] == "application/problem+json"
        assert anon.get("/readyz").json()["auth"] == "keys"


def test_idempotency_key_is_per_tenant_and_per_body(stack):
    with stack.client("acme") as acme, stack.client("beta") as beta:
        key = {"Idempotency-Key": "order-42"}
        first = acme.post("/v1/jobs", json=gen("Hello"), headers=key)
        again = acme.post("/v1/jobs", json=gen("Hello"), headers=key)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
        other = acme.post("/v1/jobs", json=gen("Goodbye"), headers=key)
        assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
        theirs = beta.post("/v1/jobs", json=gen("Hello"), headers=key)  # same key, other tenant: its own job
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
        assert beta.get(f"/v1/jobs/{first.json()['id']}").status_code == 404
        bad = acme.post("/v1/jobs", json=gen("Hello"), headers={"Idempotency-Key": "x" * 300})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
