"""`StrictJSONResponse`: every JSON body the API sends is strict JSON, never NaN or ±inf.

FastAPI's default path for a route with a `response_model` serializes with pydantic, which writes a
non-finite float as `null` without a word: a job result holding NaN would read as "finished" with
`null` where a number is promised. With this class as the app's default, the response model is
dumped to Python data and rendered with `json.dumps(allow_nan=False)`, so such a value is a 500
problem (and a bug to fix) instead of a silently wrong answer. Workers fail such jobs before they
finish (workers/finite.py); this is the last line on the way out.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class StrictJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")
