"""A finished result never carries NaN or ±inf: `check_finite` finds them, whatever the kind.

JSON has no NaN: Python's `json` writes a bare `NaN` (invalid JSON), pydantic writes `null` where
the schema promises a number. Either way the caller gets a result that looks finished and is not.
`workers.tasks` calls this once for every kind, after the method returns, and fails the job with a
`non-finite-result` problem that names the kind, where the values are, and the parameters the
request set away from their defaults (the likely cause: e.g. LIME's `kernel_width`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.common import FieldError
from workers.errors import NonFiniteResult

MAX_PATHS = 5


def non_finite_paths(value: Any, path: str = "", limit: int = MAX_PATHS) -> list[str]:
    """Paths (`scores[0][3]`, `convergence.delta[1]`) of the first `limit` non-finite floats in
    JSON-like data (dicts, lists, tuples, scalars)."""
    found: list[str] = []
    stack = [(path, value)]
    while stack and len(found) < limit:
        here, v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                found.append(here or "(the result)")
        elif isinstance(v, dict):
            stack.extend((f"{here}.{k}" if here else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, (list, tuple)):
            stack.extend((f"{here}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return found


def _changed_params(params: BaseModel | None) -> dict[str, tuple[Any, Any]]:
    """{name: (value, default)} for the parameters set away from their defaults."""
    if params is None:
        return {}
    values = params.model_dump(mode="json")
    try:
        defaults = type(params)().model_dump(mode="json")
    except ValidationError:  # a params model with required fields: name every field
        defaults = {}
    return {k: (v, defaults.get(k)) for k, v in values.items() if k not in defaults or defaults[k] != v}


def check_finite(out: dict, kind: str, params: BaseModel | None = None) -> None:
    """Raise `NonFiniteResult` if `out` (a result as JSON-ready data) holds NaN or ±inf.

    `params`: the request's parameters; the ones set away from their defaults are named in the
    problem (`detail`, and `errors` with loc ["params", name]) as what led there."""
    paths = non_finite_paths(out)
    if not paths:
        return
    changed = _changed_params(params)
    shown = ", ".join(f"{k}={v!r}" for k, (v, _) in changed.items())
    detail = (f"the {kind} result has values that are not finite numbers (NaN or ±inf) at {', '.join(paths)}"
              f"{' and more' if len(paths) == MAX_PATHS else ''}; "
              + (f"parameters set away from their defaults: {shown}; try values closer to the defaults"
                 if changed else "with default parameters (please report it)"))
    errors = [FieldError(loc=["params", k], msg=f"{k}={v!r} (default {d!r}) led to a non-finite result",
                         type="non_finite_result", ctx={"value": v, "default": d})
              for k, (v, d) in changed.items()]
    raise NonFiniteResult(detail, errors or None)
