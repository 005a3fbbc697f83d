"""Submit -> result seen by a client: long polling (`GET /v1/jobs/{id}?wait=30`, service/longpoll.py)
against polling at the `Retry-After` the API suggests (the only other way not to poll fast). One API
process, one worker holding SmolLM2-135M, a private redis-server; the two ways alternate on the same
jobs (a short `generate` and an IG `attribution`), so both see the same load.

    python -m bench.run longpoll        # LANTERN_LONGPOLL_N overrides 6 rounds per job and way
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
JOBS = {
    "generate (8 tokens)": {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "The capital of France is"},
                            "params": {"max_new_tokens": 8}},
    "attribution (IG, 16 steps)": {"kind": "attribution", "model": "smollm2-135m",
                                   "input": {"prompt": "When Mary and John went to the store, John gave a drink to",
                                             "target": " Mary"}, "params": {"n_steps": 16}},
}
TERMINAL = ("finished", "failed", "canceled")


def _one(c: httpx.Client, body: dict, long_poll: bool) -> dict:
    """Submit, then follow the job one way; seconds from submit to the finished view in hand, the
    seconds after the job's own `finished_at`, and the GETs it took."""
    t0 = time.time()
    r = c.post("/v1/jobs", json=body)
    r.raise_for_status()
    view, gets = r.json(), 0
    retry = float(r.headers.get("retry-after", "1"))
    while view["status"] not in TERMINAL:
        if long_poll:
            r = c.get(f"/v1/jobs/{view['id']}", params={"wait": 30}, timeout=60)
        else:
            time.sleep(retry)
            r = c.get(f"/v1/jobs/{view['id']}")
        gets += 1
        view = r.json()
        retry = float(r.headers.get("retry-after", "1"))
    seen = time.time()
    finished = datetime.fromisoformat(view["finished_at"]).timestamp()
    return {"total": seen - t0, "lag": seen - finished, "gets": gets, "status": view["status"]}


def run() -> str:
    from tests.conftest import free_port
    from tests.redis_server import PrivateRedis

    n = int(os.environ.get("LANTERN_LONGPOLL_N", "6"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp))
        redis.start()
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_REDIS_URL": redis.url(0), "LANTERN_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)], cwd=ROOT, env=env)
        worker = subprocess.Popen([sys.executable, "-m", "workers.main", "--model", "smollm2-135m", "--metrics-port", "0"],
                                  cwd=ROOT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 600
            with httpx.Client(base_url=base, timeout=30) as c:
                while time.monotonic() < deadline:
                    try:
                        models = c.get("/v1/models").json()["models"]
                        if any(m["id"] == "smollm2-135m" and m["workers"] for m in models):
                            break
                    except (httpx.TransportError, KeyError, ValueError):
                        pass
                    time.sleep(0.5)
                for name, body in JOBS.items():
                    _one(c, body, True)  # warm-up (first-run costs)
                    got: dict[bool, list[dict]] = {True: [], False: []}
                    for _ in range(n):
                        for way in (True, False):
                            got[way].append(_one(c, body, way))
                    rows.append((name, got))
        finally:
            for p in (worker, api):
                p.terminate()
            for p in (worker, api):
                p.wait(timeout=60)
            redis.stop()
    med = statistics.median
    lines = ["## Long polling: submit → result seen by the client\n",
             f"{n} jobs per row and way, alternating, one worker (SmolLM2-135M, CPU) and one API on loopback. "
             "*Total*: from the submit to the finished view in the client's hands; *after finished_at*: how "
             "long after the job's own end time the client saw it; *GETs*: polls per job. Long polling asks "
             "`?wait=30` (LANTERN_MAX_WAIT_S); the other way sleeps each answer's `Retry-After` (1 s minimum, "
             "the API's estimate from the model's average run time) before the next GET.\n",
             "| job | way | total s (median) | after finished_at s (median, max) | GETs (median) |",
             "| --- | --- | ---: | ---: | ---: |"]
    for name, got in rows:
        for way, label in ((True, "long polling `?wait=30`"), (False, "polling at `Retry-After`")):
            xs = got[way]
            lines.append(f"| {name} | {label} | {med(x['total'] for x in xs):.2f} | "
                         f"{med(x['lag'] for x in xs):.3f}, {max(x['lag'] for x in xs):.3f} | "
                         f"{med(x['gets'] for x in xs):.0f} |")
    lines += ["", "Long polling sees the result within one server check (150 ms) of the job's end; polling at "
              "`Retry-After` waits out the rest of the advised interval, at least 1 s per poll, and its "
              f"estimate can overshoot. Load average at the end: {os.getloadavg()[0]:.1f}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
