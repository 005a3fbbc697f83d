"""The OpenAPI document shows every result's shape: `JobView.result` is stored and served as plain
JSON (validating a large result into its model on every GET would cost the API time for nothing),
but the document declares it as the union of the kinds' result models, so a client generated from
`/openapi.json` gets real types. Which member applies is named by the view's `kind`."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.jobs import KINDS

REF = "#/components/schemas/{model}"


def with_result_types(doc: dict[str, Any]) -> dict[str, Any]:
    results = list(dict.fromkeys(spec.result for spec in KINDS.values()))
    refs, defs = models_json_schema([(m, "serialization") for m in results], ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in defs.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    view = schemas["JobView"]["properties"]
    view["result"] = {
        "anyOf": [refs[(m, "serialization")] for m in results] + [{"type": "null"}],
        "title": "Result",
        "description": "the result of a finished job: the result model of the job's `kind` "
                       "(e.g. `AttributionResult` for `attribution`)",
    }
    return doc
