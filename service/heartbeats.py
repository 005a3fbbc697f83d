"""Live workers, read from their heartbeat keys (`lantern:worker:<name>`, the worker's facts with a
TTL), for the submit checks and job views.

Finding the keys is a SCAN of the keyspace, whose size grows with the jobs Redis holds, so a submit
must not pay it every time. `holding(model)` answers from the last snapshot when it has a worker for
the model, and a snapshot older than `CACHE_S` is then read again by a background thread (one at a
time), so a caller never waits for the SCAN and the event loop can ask (service/submission.py). When
the snapshot has no worker for the model it reads at once: a worker that has just started is seen
at once (a model with none is re-read every time, on the thread pool: `cached` says which case it
is), and one that has stopped is noticed about `CACHE_S` later than its heartbeat TTL says, which is
already seconds. `read()` is always fresh (`GET /v1/models`, `/readyz`, the metrics scrape).
"""

from __future__ import annotations

import json
import time

from redis import Redis

from schemas.keys import WORKER_PATTERN
from service.refresh import Refresher

CACHE_S = 1.0
SCAN_COUNT = 1000  # keys a SCAN step looks at: each step blocks Redis ~1 ms on a keyspace of many jobs


class Heartbeats:
    def __init__(self, connection: Redis):
        self.redis = connection
        self._snapshot: tuple[float, list[dict]] = (float("-inf"), [])
        self._refresher = Refresher(self.read, "heartbeats")

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

    def cached(self, model: str) -> bool:
        """Whether `holding(model)` answers from the snapshot, without reading Redis here."""
        return any(model in w["model_ids"] for w in self._snapshot[1])

    def holding(self, model: str) -> list[dict]:
        """The live workers that hold `model` (see the module docstring for how fresh)."""
        taken, workers = self._snapshot
        found = [w for w in workers if model in w["model_ids"]]
        if not found:
            return [w for w in self.read() if model in w["model_ids"]]
        if time.monotonic() - taken >= CACHE_S:
            self._refresher.start()
        return found

    def facts(self, model: str) -> dict | None:
        """The facts a live worker publishes for `model` (`LM.facts()`); None: no live worker holds it."""
        return next((m for w in self.holding(model) for m in w.get("models", []) if m.get("id") == model), None)
