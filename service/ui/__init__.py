"""The explorer page at `/ui` (static files in service/ui/static/: HTML, vanilla JS, CSS; no build
step, no CDN) and the result schemas it and generated clients read from the OpenAPI document.

The page is public (service/auth.py lets `/ui` and `/ui/...` through without a key): it holds no
tenant data. It calls the API from the browser with the key typed into its key field (kept in
sessionStorage), like any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema

from schemas.jobs import KINDS

STATIC = Path(__file__).parent / "static"
REF = "#/components/schemas/"


def install(app: FastAPI) -> None:
    """GET /ui (the page) and /ui/static/... (its scripts and styles)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui")

    @app.get("/ui", include_in_schema=False)
    def explorer() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/ui/", include_in_schema=False)
    def explorer_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    install_openapi(app)


def _rename_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (REF + names.get(v[len(REF):], v[len(REF):]) if k == "$ref" and isinstance(v, str)
                    and v.startswith(REF) else _rename_refs(v, names)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, names) for v in node]
    return node


def add_result_schemas(doc: dict[str, Any]) -> dict[str, Any]:
    """Put every kind's result model in `components.schemas` and type `JobView.result` as one of them
    (`x-result-by-kind` maps each `kind` to its result), so a client generated from the document gets
    real result types. Pydantic's qualified names for clashing models (two `Faithfulness`) are
    renamed after their kind's module (`AttributionFaithfulness`)."""
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    _, top = models_json_schema([(spec.result, "serialization") for spec in KINDS.values()],
                                ref_template=REF + "{model}")
    defs = top.get("$defs", {})
    names = {n: "".join(w.capitalize() for w in n.split("__")[-2].split("_")) + n.split("__")[-1]
             for n in defs if "__" in n}
    for name, schema in defs.items():
        components.setdefault(names.get(name, name), _rename_refs(schema, names))  # same name: the same model
    by_kind = {kind: REF + spec.result.__name__ for kind, spec in KINDS.items()}
    view = components.get("JobView", {}).get("properties", {})
    if "result" in view:
        view["result"] = {"anyOf": [*({"$ref": r} for r in by_kind.values()), {"type": "null"}],
                          "title": "Result", "x-result-by-kind": by_kind,
                          "description": "the kind's result (see `x-result-by-kind`) once the job has finished"}
    return doc


def install_openapi(app: FastAPI) -> None:
    """Wrap the app's `openapi()` (whatever it is now) to add the result schemas once."""
    inner = app.openapi
    done: list[int] = []

    def openapi() -> dict[str, Any]:
        doc = inner()
        if id(doc) not in done:
            add_result_schemas(doc)
            done.append(id(doc))
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
