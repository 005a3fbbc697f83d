"""The explorer page at `/ui` (static files in service/ui/static/: HTML, vanilla JS, CSS; no build
step, no CDN). The result schemas it reads come from the OpenAPI document (service/openapi_results.py).

The page is public (service/auth.py lets `/ui` and `/ui/...` through without a key): it holds no
tenant data. It calls the API from the browser with the key typed into its key field (kept in
sessionStorage), like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """GET /ui (the page) and /ui/static/... (its scripts and styles)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui")

    @app.get("/ui", include_in_schema=False)
    def explorer() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ui/", include_in_schema=False)
    def explorer_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

