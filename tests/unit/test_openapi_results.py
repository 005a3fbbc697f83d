"""The OpenAPI document types `JobView.result` as the union of every kind's result model
(service/openapi_results.py), and every reference in it resolves."""

from __future__ import annotations

import json
import re

from schemas.jobs import KINDS
from service.main import create_app


def test_job_view_result_is_the_union_of_the_kinds_results_and_refs_resolve():
    doc = create_app().openapi()
    schemas = doc["components"]["schemas"]
    members = schemas["JobView"]["properties"]["result"]["anyOf"]
    named = {m["$ref"].rsplit("/", 1)[1] for m in members if "$ref" in m}
    assert named == {spec.result.__name__ for spec in KINDS.values()} | {"SweepResult"}
    by_kind = schemas["JobView"]["properties"]["result"]["x-result-by-kind"]
    assert {k: v.rsplit("/", 1)[1] for k, v in by_kind.items()} == {k: s.result.__name__ for k, s in KINDS.items()}
    assert {"type": "null"} in members  # queued, running and failed jobs have none
    for kind, spec in KINDS.items():
        assert "provenance" in schemas[spec.result.__name__]["required"], kind
    refs = set(re.findall(r"#/components/schemas/([\w.-]+)", json.dumps(doc)))
    assert refs <= set(schemas), sorted(refs - set(schemas))
