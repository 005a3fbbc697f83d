"""Live workers, read from their heartbeat keys (`lantern:worker:<name>`, the worker's facts with a
TTL), for the submit checks and job views.

Finding the keys is a SCAN of the keyspace, whose size grows with the jobs Redis holds, so a submit
must not pay it every time. `holding(model)` answers from a snapshot taken within `CACHE_S` when the
snapshot has a worker for the model, and reads again otherwise: a worker that has just started is
seen at once (a model with none is re-read every time), and one that has stopped is noticed at most
`CACHE_S` later than its heartbeat TTL says, which is already seconds. `read()` is always fresh
(`GET /v1/models`, `/readyz`, the metrics scrape).
"""

from __future__ import annotations

import json
import threading
import time

from redis import Redis

from schemas.keys import WORKER_PATTERN

CACHE_S = 1.0
SCAN_COUNT = 1000  # keys a SCAN step looks at: each step blocks Redis ~1 ms on a keyspace of many jobs


class Heartbeats:
    def __init__(self, connection: Redis):
        self.redis = connection
        self._snapshot: tuple[float, list[dict]] = (float("-inf"), [])
        self._reading = threading.Lock()  # one refresh of a stale snapshot at a time

    def read(self) -> list[dict]:
        """Every live worker's facts, each with `model_ids`."""
        keys = list(self.redis.scan_iter(match=WORKER_PATTERN, count=SCAN_COUNT))
        workers = []
        for raw in self.redis.mget(keys) if keys else []:
            if raw is None:
                continue
            facts = json.loads(raw)
            facts["model_ids"] = [m["id"] for m in facts.get("models", [])]
            workers.append(facts)
        self._snapshot = (time.monotonic(), workers)
        return workers

    def holding(self, model: str) -> list[dict]:
        """The live workers that hold `model` (see the module docstring for how fresh). While one
        thread refreshes a stale snapshot that holds the model, the others answer from it."""
        taken, workers = self._snapshot
        found = [w for w in workers if model in w["model_ids"]]
        if found and time.monotonic() - taken < CACHE_S:
            return found
        if found and not self._reading.acquire(blocking=False):
            return found
        try:
            return [w for w in self.read() if model in w["model_ids"]]
        finally:
            if found:
                self._reading.release()

    def facts(self, model: str) -> dict | None:
        """The facts a live worker publishes for `model` (`LM.facts()`); None: no live worker holds it."""
        return next((m for w in self.holding(model) for m in w.get("models", []) if m.get("id") == model), None)
