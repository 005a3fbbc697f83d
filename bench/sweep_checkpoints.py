"""One sweep request over every checkpoint of the grammar model (bench/train_checkpoints.py): the
`syntactic_attention` kind's SAS and loss across training as the API serves them, with the sweep's
largest jumps and change points, checked against the direct per-checkpoint run of
bench/eval_checkpoints.py (bench/results/checkpoints_sas.json) when it exists. (Throughput with 1 and
2 workers is bench/bench_sweep.py's.)

    python -m bench.sweep_checkpoints [--models .lantern/checkpoints/grammar-llama/models.json] [--workers 1]

Starts its own API and worker processes on LANTERN_REDIS_URL (default redis://127.0.0.1:6379/11,
flushed first). The input is the same 100 held-out sentences bench/eval_checkpoints.py scores, so
the sweep's SAS and loss per step can be compared with that direct run. Writes
bench/results/checkpoints_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from redis import Redis

from bench.bench_sweep import submit_and_wait
from bench.eval_checkpoints import held_out

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for name in ("lantern_checkpoint_load_seconds_sum", "lantern_checkpoint_load_seconds_count"):
        out[name] = sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))
    m = re.search(r'^lantern_job_run_seconds_sum\{kind="syntactic_attention"\} (\S+)$', text, re.MULTILINE)
    out["run_seconds"] = float(m.group(1)) if m else 0.0
    return out


def sweep(models: Path, n_workers: int, redis_url: str, n_sentences: int = 100) -> dict:
    Redis.from_url(redis_url).flushdb()
    env = {**os.environ, "LANTERN_REDIS_URL": redis_url, "LANTERN_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
           "LANTERN_MODELS_FILE": str(models), "LANTERN_TORCH_THREADS": "1"}
    model_id = json.loads(models.read_text())[0]["id"]
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "api", "--port", str(port)], cwd=ROOT, env=env)]
    metric_ports = [free_port() for _ in range(n_workers)]
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        procs += [subprocess.Popen([sys.executable, "-m", "workers.main", "--model", model_id, "--metrics-port", str(mp)],
                                   cwd=ROOT, env=env) for mp in metric_ports]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                live = {m["id"]: m["workers"] for m in http.get("/v1/models").json()["models"]}
                if live.get(model_id, 0) >= n_workers:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError("workers did not come up")
        body = {"kind": "syntactic_attention", "model": model_id, "checkpoints": "all",
                "input": {"sentences": [s.dict() for s in held_out(n_sentences)]}, "params": {"top_k": 3}}
        wall, view = submit_and_wait(http, body)
        metrics = [scrape(mp) for mp in metric_ports]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    result = view.get("result") or {}
    n = len(result.get("series", []))
    load = sum(m["lantern_checkpoint_load_seconds_sum"] for m in metrics)
    run = sum(m["run_seconds"] for m in metrics)
    return {"workers": n_workers, "status": view["status"], "checkpoints": n, "wall_s": round(wall, 2),
            "checkpoints_per_s": round(n / wall, 3) if wall else None, "load_s": round(load, 3),
            "loads": sum(m["lantern_checkpoint_load_seconds_count"] for m in metrics), "job_run_s": round(run, 3),
            "load_share": round(load / run, 4) if run else None,
            "scalars": {k: {"steps": v["steps"], "values": v["values"], "largest_jump": v.get("largest_jump"),
                            "change_point": v.get("change_point")}
                        for k, v in result.get("scalars", {}).items() if k in ("sas", "loss", "sas:nsubj", "sas:det")},
            "finished": result.get("finished"), "failed": result.get("failed"), "warnings": result.get("warnings")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=Path(".lantern/checkpoints/grammar-llama/models.json"))
    p.add_argument("--workers", type=int, nargs="+", default=[1])
    p.add_argument("--redis", default=os.environ.get("LANTERN_REDIS_URL", "redis://127.0.0.1:6379/11"))
    p.add_argument("--out", type=Path, default=Path("bench/results/checkpoints_sweep.json"))
    a = p.parse_args(argv)
    runs = []
    for n in a.workers:
        run = sweep(a.models.resolve(), n, a.redis)
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "scalars"}))
    direct_path = Path("bench/results/checkpoints_sas.json")
    agreement = None
    if direct_path.exists():  # the same sentences scored by direct method calls: the sweep must equal them
        direct = {r["step"]: r for r in json.loads(direct_path.read_text())["checkpoints"]}
        s = runs[0]["scalars"]
        agreement = {key: max(abs(v - direct[st][field]) for st, v in zip(s[key]["steps"], s[key]["values"]))
                     for key, field in (("sas", "sas"), ("loss", "sas_job_loss")) if key in s}
        print("max |sweep - direct|:", agreement)
    os.makedirs(a.out.parent, exist_ok=True)
    a.out.write_text(json.dumps({"load_average": os.getloadavg(), "max_abs_diff_vs_direct": agreement,
                                 "runs": runs}, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
