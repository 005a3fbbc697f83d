"""The OpenAPI document shows every result's shape. `JobView.result` is stored and served as plain
JSON (validating a large result into its model on every GET would cost the API time for nothing),
but the document declares it as one of the kinds' result models, or a sweep's `SweepResult`, so a
client generated from `/openapi.json` (and the explorer page) gets real result types:
`x-result-by-kind` maps each `kind` to its result."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.jobs import KINDS
from schemas.sweeps import SweepResult

REF = "#/components/schemas/"


def _rename_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (REF + names.get(v[len(REF):], v[len(REF):]) if k == "$ref" and isinstance(v, str)
                    and v.startswith(REF) else _rename_refs(v, names)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, names) for v in node]
    return node


def with_result_types(doc: dict[str, Any]) -> dict[str, Any]:
    """Put every result model in `components.schemas` and type `JobView.result` as one of them.
    Pydantic's qualified names for clashing models (two `Faithfulness`) are renamed after their
    kind's module (`AttributionFaithfulness`)."""
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    models = [*(spec.result for spec in KINDS.values()), SweepResult]
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF + "{model}")
    defs = top.get("$defs", {})
    names = {n: "".join(w.capitalize() for w in n.split("__")[-2].split("_")) + n.split("__")[-1]
             for n in defs if "__" in n}
    for name, schema in defs.items():
        components.setdefault(names.get(name, name), _rename_refs(schema, names))  # same name: the same model
    by_kind = {kind: REF + spec.result.__name__ for kind, spec in KINDS.items()}
    view = components["JobView"]["properties"]
    view["result"] = {"anyOf": [*({"$ref": r} for r in by_kind.values()), {"$ref": REF + SweepResult.__name__},
                                {"type": "null"}],
                      "title": "Result", "x-result-by-kind": by_kind,
                      "description": "once the job has finished: the result of its `kind` (see `x-result-by-kind`), "
                                     "or a `SweepResult` for a job that named `checkpoints`"}
    return doc
