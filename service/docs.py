"""The API's own documentation pages, served with no network: Swagger UI at /docs from assets in the
package (service/static/swagger-ui/, vendored swagger-ui-dist), and one page per problem type at
/problems/<slug> (the `type` of every problem+json, schemas/problems.py). ReDoc is off: it would
need a CDN or a second vendored bundle, and Swagger UI covers the same document.

/problems/... and /static/... need no API key (service/auth.py): they hold no tenant data, and a
problem's `type` should open for whoever got the problem, a 401 included.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from schemas.problems import PROBLEM_BASE, PROBLEM_TYPES
from service.problems import ProblemError

SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"
SWAGGER_PATH = "/static/swagger-ui"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body>{body}</body></html>
"""


def _problem_page(slug: str) -> str:
    p = PROBLEM_TYPES[slug]
    body = (f"<h1>{escape(p.title)}</h1>"
            f"<p>HTTP status <b>{p.status}</b> &middot; problem type <code>{escape(p.uri)}</code></p>"
            f"<h2>What to do</h2><p>{escape(p.advice)}</p>"
            f"<p>The problem's <code>detail</code> says what happened in your case, and <code>errors</code> "
            f"(when present) names each failing field. <a href=\"{PROBLEM_BASE}\">All problem types</a>.</p>")
    return _PAGE.format(title=escape(f"{p.title} ({p.status})"), body=body)


def _index_page() -> str:
    rows = "".join(f"<li><a href=\"{PROBLEM_BASE}{p.slug}\"><code>{p.slug}</code></a> "
                   f"({p.status}): {escape(p.title)}</li>" for p in PROBLEM_TYPES.values())
    body = ("<h1>Lantern problem types</h1><p>Every error is RFC 9457 <code>application/problem+json</code>; "
            f"its <code>type</code> is one of these relative URIs.</p><ul>{rows}</ul>")
    return _PAGE.format(title="Lantern problem types", body=body)


def install(app: FastAPI) -> None:
    """Add /docs (local Swagger UI), its assets, and /problems/<slug>. Create the app with
    `docs_url=None, redoc_url=None` so FastAPI's CDN pages are not added as well."""
    app.mount(SWAGGER_PATH, StaticFiles(directory=SWAGGER_DIR), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"), title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{SWAGGER_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )

    @app.get(PROBLEM_BASE, include_in_schema=False)
    @app.get(PROBLEM_BASE.rstrip("/"), include_in_schema=False)
    def problem_index() -> HTMLResponse:
        return HTMLResponse(_index_page())

    @app.get(f"{PROBLEM_BASE}{{slug}}", include_in_schema=False)
    def problem_page(slug: str) -> HTMLResponse:
        if slug not in PROBLEM_TYPES:
            raise ProblemError(404, "not-found", "Not found", "no problem type with that name")
        return HTMLResponse(_problem_page(slug))
