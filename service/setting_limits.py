"""The limit that applies, where a caller reads it: in the OpenAPI document and in the 422.

A schema field bounded by a setting says which one (`x-limit: max_steps`, from `schemas.limits.limited`;
schemas/ names settings and never reads them); its own `maximum` / `maxItems` is the hard cap no
setting can lift. The API substitutes the configured value into its OpenAPI document, and answers a
value over the hard cap as it answers one over the setting: a `limit_exceeded` error naming the
setting (`600 is over the limit max_steps=512`), not pydantic's "less than or equal to 4096".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.jobs import KINDS
from schemas.limits import LIMIT_KEY, Limits

HARD_CAP_ERRORS = {"less_than_equal": "le", "too_long": "max_length"}


def limited_fields() -> dict[tuple[str, str, str], str]:
    """(kind, "input" | "params", field) -> the setting that bounds it."""
    out: dict[tuple[str, str, str], str] = {}
    for kind, spec in KINDS.items():
        for part, model in (("input", spec.input), ("params", spec.params)):
            for name, info in model.model_fields.items():
                extra = info.json_schema_extra
                if isinstance(extra, dict) and LIMIT_KEY in extra:
                    out[(kind, part, info.alias or name)] = str(extra[LIMIT_KEY])
    return out


def _cap(node: dict[str, Any], value: int) -> int | None:
    """Lower `maximum` / `maxItems` of `node` and its union branches to `value`; the hard cap seen."""
    hard = None
    for key in ("maximum", "maxItems"):
        if key in node:
            hard = int(node[key])  # FastAPI's document writes integers as floats (4096.0)
            node[key] = min(hard, value)
    for branch in (b for k in ("anyOf", "oneOf", "allOf") for b in node.get(k, [])):
        hard = _cap(branch, value) or hard
    return hard


def apply_to_openapi(doc: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Every property marked `x-limit` shows the configured value as its maximum (and says so)."""
    for schema in doc.get("components", {}).get("schemas", {}).values():
        for prop in (schema.get("properties") or {}).values():
            name = prop.get(LIMIT_KEY)
            if not name:
                continue
            value = getattr(limits, name)
            hard = _cap(prop, value)
            prop["x-limit-value"] = min(value, hard) if hard is not None else value
            note = f"At most {prop['x-limit-value']}: the setting {name}={value}" + (
                f" (the hard cap is {hard})" if hard is not None and hard != prop["x-limit-value"] else "") + "."
            prop["description"] = f"{prop['description'].rstrip('.')}. {note}" if prop.get("description") else note
    return doc


def name_limits(errors: Iterable[dict[str, Any]], limits: Limits) -> list[dict[str, Any]]:
    """Pydantic's errors (FastAPI's `exc.errors()`), with each hard-cap error on a field bounded by a
    setting replaced by one `limit_exceeded` error naming the setting (and the union branches' other
    errors on that field dropped)."""
    errors = list(errors)
    fields = limited_fields()
    named: dict[tuple[str, ...], dict[str, Any]] = {}
    for e in errors:
        loc = tuple(str(p) for p in e.get("loc", ()))
        if len(loc) < 4 or loc[0] != "body" or e.get("type") not in HARD_CAP_ERRORS:
            continue
        setting = fields.get((loc[1], loc[2], loc[3]))
        if setting is None:
            continue
        ctx = e.get("ctx") or {}
        hard = ctx.get(HARD_CAP_ERRORS[e["type"]])
        value = ctx.get("actual_length") if e["type"] == "too_long" else e.get("input")
        limit = getattr(limits, setting)
        applied = min(limit, hard) if isinstance(hard, int) else limit
        msg = (f"{value} is over the limit {setting}={limit}" if applied == limit
               else f"{value} is over {applied}, the most this field takes ({setting}={limit} cannot lift it)")
        named[loc[:4]] = {"type": "limit_exceeded", "loc": ["body", loc[2], loc[3]], "msg": msg,
                          "ctx": {"limit": setting, "limit_value": applied, "value": value}}
    if not named:
        return errors
    kept = [e for e in errors if tuple(str(p) for p in e.get("loc", ()))[:4] not in named]
    return list(named.values()) + kept
