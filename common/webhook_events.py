"""The webhook delivery entry both sides enqueue (the worker when a job starts or ends, the reaper,
the API when it cancels a queued job) on `lantern:webhooks`. Pure: json, hashlib, no Redis."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any


def message_id(job_id: str, event: str) -> str:
    """The Standard Webhooks `webhook-id`: one per job and event, the same on every retry."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:32]


def build_entry(job_id: str, owner: str, payload: Any, event: str, result: dict | None = None,
                error: dict | None = None, max_result_bytes: int = 16 * 1024) -> dict | None:
    """The delivery entry for `event`, or None when the job's request did not ask for it."""
    hook = payload.get("webhook") if isinstance(payload, dict) else None
    if not hook or event not in hook.get("events", ()):
        return None
    data: dict[str, Any] = {"id": job_id, "kind": payload.get("kind"), "model": payload.get("model"),
                            "status": event, "links": {"self": f"/v1/jobs/{job_id}"}}
    if error is not None:
        data["error"] = error
    if result is not None:
        if len(json.dumps(result, allow_nan=False)) <= max_result_bytes:
            data["result"] = result
        else:
            data["result_omitted"] = True
    body = json.dumps({"type": f"job.{event}", "timestamp": datetime.now(timezone.utc).isoformat(), "data": data},
                      separators=(",", ":"), allow_nan=False)  # strict JSON: a NaN result raises, never ships
    return {"id": message_id(job_id, event), "job": job_id, "owner": owner, "event": event, "url": hook["url"],
            "body": body, "attempt": 0, "created": time.time()}
