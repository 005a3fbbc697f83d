"""Loopback load run of the API: N submissions (`POST /v1/jobs`) with C in flight, then the same
number of polls (`GET /v1/jobs/{id}`), against one API process (uvicorn, one event loop) with API
keys, rate/concurrency/idempotency guards on, and a private redis-server. No worker runs, so the
figures are the API's own cost (validation, guards, enqueue), not the models'.

    python -m bench.run load        # LANTERN_LOAD_N / LANTERN_LOAD_CONCURRENCY override 2000 / 50
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _drive(base: str, n: int, concurrency: int) -> dict:
    body = {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "The capital of France is"},
            "params": {"max_new_tokens": 4}}
    headers = {"Authorization": f"Bearer {KEY}"}
    submit_ms: list[float] = []
    poll_ms: list[float] = []
    codes: dict[int, int] = {}
    ids: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as c:
        async def submit(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/jobs", json=body, headers={"Idempotency-Key": f"load-{i}"})
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 202:
                        ids.append(r.json()["id"])
                except httpx.HTTPError:
                    codes[-1] = codes.get(-1, 0) + 1
                submit_ms.append((time.perf_counter() - t0) * 1000)

        async def poll(job_id: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{job_id}")
                if r.status_code != 200:
                    codes[1000 + r.status_code] = codes.get(1000 + r.status_code, 0) + 1
                poll_ms.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(n)))
        submit_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(*(poll(i) for i in ids))
        poll_wall = time.perf_counter() - t0
    return {"submit_ms": submit_ms, "poll_ms": poll_ms, "codes": codes, "submit_wall": submit_wall,
            "poll_wall": poll_wall}


def run() -> str:
    from tests.conftest import free_port
    from tests.redis_server import PrivateRedis

    n = int(os.environ.get("LANTERN_LOAD_N", "2000"))
    concurrency = int(os.environ.get("LANTERN_LOAD_CONCURRENCY", "50"))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp))
        redis.start()
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LANTERN_REDIS_URL": redis.url(0), "LANTERN_LOG_LEVEL": "WARNING",
               "LANTERN_API_KEYS": f"bench={KEY}", "LANTERN_MAX_QUEUE_DEPTH": str(n + 10),
               "LANTERN_MAX_ACTIVE_JOBS": str(n + 10), "LANTERN_RATE_LIMIT_PER_S": "100000",
               "LANTERN_RATE_LIMIT_BURST_PER_MIN": "1000000"}
        api = subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)], cwd=ROOT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(base + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            out = asyncio.run(_drive(base, n, concurrency))
        finally:
            api.terminate()
            api.wait(timeout=30)
            redis.stop()
    load_after = os.getloadavg()[0]
    s, p = out["submit_ms"], out["poll_ms"]
    errors = sum(v for k, v in out["codes"].items() if k != 202)
    return "\n".join([
        "## API load (loopback)\n",
        f"{n} submissions with {concurrency} in flight, then {len(p)} polls, against one API process (one "
        "uvicorn event loop; sync routes on its thread pool) with API keys, per-tenant rate and concurrency "
        "limits and an `Idempotency-Key` on every submit, Redis on loopback, no worker. The load generator "
        "shares the same cores, so the figures are an upper bound on the API's own latency.\n",
        "| request | n | p50 ms | p99 ms | mean ms | throughput /s | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| `POST /v1/jobs` | {len(s)} | {statistics.median(s):.1f} | {_pct(s, 0.99):.1f} | {statistics.fmean(s):.1f} "
        f"| {len(s) / out['submit_wall']:.0f} | {errors} |",
        f"| `GET /v1/jobs/{{id}}` | {len(p)} | {statistics.median(p):.1f} | {_pct(p, 0.99):.1f} | "
        f"{statistics.fmean(p):.1f} | {len(p) / out['poll_wall']:.0f} | "
        f"{sum(v for k, v in out['codes'].items() if k >= 1000)} |",
        "",
        f"Status codes of the submissions: {dict(sorted(out['codes'].items()))}. Load average of the machine "
        f"(other processes included) {load_before:.1f} before, {load_after:.1f} after the run: on a busy machine "
        "the latencies measure the queueing for CPU as much as the API.",
    ])


if __name__ == "__main__":
    print(run())
