"""`make bench`: run the benchmark modules and write BENCHMARKS.md.

Each `bench/bench_<name>.py` has `run() -> str` returning a Markdown section; peers (Captum,
Inseq, naive baselines) run in the same process on the same input. `python -m bench.run NAME...`
runs only those and keeps the other sections from their last run (bench/results/<name>.md).
"""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return f"{platform.machine()} · {device} · torch {torch.__version__} · Python {platform.python_version()}"


def names() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> None:
    RESULTS.mkdir(exist_ok=True)
    if argv == ["--assemble"]:  # rebuild BENCHMARKS.md from the sections already written
        argv = []
    elif not argv:
        argv = names()
    for name in argv:
        t0 = time.perf_counter()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        section = importlib.import_module(f"bench.bench_{name}").run()
        stamp = f"\n_{time.strftime('%Y-%m-%d')} · {machine()} · commit {commit} · {time.perf_counter() - t0:.0f} s_\n"
        (RESULTS / f"{name}.md").write_text(section.rstrip() + "\n" + stamp)
        print(f"bench {name}: done", flush=True)
    parts = ["# Benchmarks\n", "Written by `make bench` (bench/run.py). Medians of repeated runs; peers run in the "
             "same process on the same input. Each section says what limits the figure.\n"]
    # every section written so far, including ones measured elsewhere (gpu.md: bench/gpu_check.py on a GPU)
    parts += [p.read_text() for p in sorted(RESULTS.glob("*.md"))]
    (HERE.parent / "BENCHMARKS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1:])
