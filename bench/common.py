"""Shared benchmark helpers: the real model once, prompts of a given token length, timing, and a
running service for end-to-end latency."""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("When Mary and John went to the store, John gave a drink to Mary. The weather was warm and the "
        "streets were full of people who had come to see the market, where farmers sold apples, bread and "
        "cheese. ")


@functools.cache
def load_smollm2():
    from common.registry import load_registry
    from workers.models.loading import load_model

    return load_model(load_registry()["smollm2-135m"])


def prompt_of_tokens(lm, n: int) -> str:
    """A natural-text prompt of exactly n tokens under lm's tokenizer."""
    ids = lm.tokenizer(TEXT * (n // 20 + 2), add_special_tokens=False)["input_ids"][:n]
    return lm.tokenizer.decode(ids)


def timed(fn, repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def service_overhead(n_jobs: int = 200) -> dict:
    """Start an API and a worker on Redis db 13, run n trivial jobs one after another."""
    import httpx
    from redis import Redis

    url = os.environ.get("LANTERN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    Redis.from_url(url).flushdb()
    port = 8765
    # the per-tenant rate limit would throttle the tight polling loop: this measures the queue, not it
    env = {**os.environ, "LANTERN_REDIS_URL": url, "LANTERN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
           "LANTERN_RATE_LIMIT_PER_S": "1000000", "LANTERN_RATE_LIMIT_BURST_PER_MIN": "100000000"}
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)], cwd=ROOT, env=env),
             subprocess.Popen([sys.executable, "-m", "workers.main", "--model", "smollm2-135m", "--metrics-port", "0"],
                              cwd=ROOT, env=env)]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                models = http.get("/v1/models").json()["models"]
                if any(m["id"] == "smollm2-135m" and m["workers"] for m in models):
                    break
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        body = {"kind": "generate", "model": "smollm2-135m", "input": {"prompt": "Hello there"},
                "params": {"max_new_tokens": 1}}
        overhead, method, rtt = [], [], []
        for i in range(n_jobs + 5):
            t0 = time.perf_counter()
            submitted = http.post("/v1/jobs", json=body)
            submitted.raise_for_status()
            while True:
                polled = http.get(f"/v1/jobs/{submitted.json()['id']}")
                polled.raise_for_status()
                if (view := polled.json())["status"] in ("finished", "failed"):
                    break
                time.sleep(0.002)
            if i < 5:  # warm-up
                continue
            rtt.append(time.perf_counter() - t0)
            from datetime import datetime

            span = (datetime.fromisoformat(view["finished_at"]) - datetime.fromisoformat(view["created_at"])).total_seconds()
            elapsed = view["result"]["provenance"]["elapsed_s"]
            method.append(elapsed)
            overhead.append(span - elapsed)
        return {"n": n_jobs, "overhead_p50": statistics.median(overhead), "overhead_p99": pct(overhead, 0.99),
                "method_p50": statistics.median(method), "method_p99": pct(method, 0.99),
                "rtt_p50": statistics.median(rtt), "rtt_p99": pct(rtt, 0.99)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
