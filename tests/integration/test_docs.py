"""The API documents itself with no network (issue 10 item 14): /docs loads Swagger UI from assets
in the package, not a CDN, and every problem `type` the code can emit is a relative URI the API
answers with a page (`GET /problems/<slug>`). Before, /docs pulled its script from a CDN (blank
offline) and the types pointed at a host that does not exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from schemas.problems import PROBLEM_BASE, PROBLEM_TYPES
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[2]


def emitted_slugs() -> dict[str, str]:
    """slug -> where, for every problem type the code can emit: `ProblemError(status, "slug", ...)`,
    `PROBLEM_BASE + "slug"`, `problem_uri("slug")`, and `slug = "..."` in a JobFailed subclass."""
    found: dict[str, str] = {}
    for folder in ("schemas", "common", "service", "delivery", "workers"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(), where)):
                slug = None
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", None))
                    if name == "ProblemError" and len(node.args) >= 2:
                        slug = node.args[1]
                    elif name == "problem_uri" and node.args:
                        slug = node.args[0]
                elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) \
                        and getattr(node.left, "id", None) == "PROBLEM_BASE":
                    slug = node.right
                elif isinstance(node, ast.ClassDef):
                    for stmt in node.body:
                        if isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["slug"]:
                            slug = stmt.value
                if isinstance(slug, ast.Constant) and isinstance(slug.value, str):
                    found.setdefault(slug.value, f"{where}:{slug.lineno}")
    return found


@pytest.fixture(scope="module")
def client(redis_url) -> TestClient:
    return TestClient(create_app(Settings(redis_url=redis_url)))


def test_every_problem_type_the_code_emits_has_a_page(client):
    emitted = emitted_slugs()
    assert len(emitted) >= 20 and {"invalid-request", "worker-lost", "method-error", "unauthorized"} <= set(emitted)
    missing = {slug: where for slug, where in emitted.items() if slug not in PROBLEM_TYPES}
    assert not missing, f"add these to schemas/problems.py: {missing}"
    for slug in emitted:
        r = client.get(PROBLEM_BASE + slug)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), slug
        page = r.text
        assert PROBLEM_TYPES[slug].title.replace("'", "&#x27;") in page and "What to do" in page, slug
    index = client.get(PROBLEM_BASE)
    assert index.status_code == 200 and all(f"{PROBLEM_BASE}{s}" in index.text for s in PROBLEM_TYPES)


def test_an_unknown_problem_type_is_404(client):
    r = client.get(PROBLEM_BASE + "no-such-problem")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_an_answered_problem_type_resolves_on_the_api(client):
    r = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    problem_type = r.json()["type"]
    assert problem_type == PROBLEM_BASE + "malformed-json"  # relative: resolved against this API
    assert client.get(problem_type).status_code == 200


def test_docs_need_no_other_host_and_their_assets_are_served(client):
    r = client.get("/docs")
    assert r.status_code == 200
    html = r.text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), "an external reference in /docs"
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(refs) >= 4  # script, stylesheet, favicon, the OpenAPI document
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    js = next(ref for ref in refs if ref.endswith(".js"))
    assert "SwaggerUIBundle" in client.get(js).text
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    assert client.get("/redoc").status_code == 404  # off: it would need a CDN


def test_with_keys_the_documentation_assets_and_problem_pages_need_none(redis_url):
    c = TestClient(create_app(Settings(redis_url=redis_url, api_keys="acme=k-acme")))
    assert c.get(PROBLEM_BASE + "unauthorized").status_code == 200
    assert c.get(PROBLEM_BASE).status_code == 200
    assert c.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    assert c.get("/docs").status_code == 401  # the API's own description still needs a key
    assert c.get("/docs", headers={"Authorization": "Bearer k-acme"}).status_code == 200
    assert c.get("/static/../openapi.json").status_code in (401, 404)  # no way around the key
