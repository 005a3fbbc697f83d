"""The whole `circuit` job (IOI, 64 ABC pairs, seed 0) on SmolLM2: seconds, forwards, positions
computed against one full forward per patched run, and the study's figures (docs/circuits.md).
The result is kept in bench/results/circuit.json."""

from __future__ import annotations

import json
import time

import torch

from bench.common import load_smollm2
from bench.run import RESULTS
from schemas.jobs import JOB_MODELS
from workers.context import Context
from workers.methods import circuit

N_PAIRS = 64


def run_job(n: int = N_PAIRS) -> tuple[dict, float]:
    lm = load_smollm2()
    job = JOB_MODELS["circuit"](kind="circuit", model=lm.id, input={"dataset": {"name": "ioi", "n": n, "seed": 0}})
    t0 = time.perf_counter()
    result = circuit.run(lm, job, Context())
    return result.model_dump(mode="json"), time.perf_counter() - t0


def run() -> str:
    torch.set_num_threads(1)
    res, seconds = run_job()
    (RESULTS / "circuit.json").write_text(json.dumps(res))
    b, f = res["behaviour"], res["faithfulness"]
    lines = [
        "## Circuit (IOI) on SmolLM2\n",
        f"The whole `circuit` job, {N_PAIRS} ABC pairs (seed 0), CPU, 1 thread: **{seconds:.0f} s**, "
        f"{res['forwards']} forwards, {res['positions_computed']:,} token positions × layers computed against "
        f"{res['positions_naive']:,} for one full forward per patched run "
        f"({res['positions_naive'] / res['positions_computed']:.1f}× fewer).\n",
        f"Behaviour: logit difference IO − S {b['logit_diff']:.2f} (corrupted {b['corrupted_logit_diff']:.2f}), "
        f"IO above S on {b['io_above_s']:.0%}, p(IO) {b['io_prob']:.2f}. Faithfulness ({f['ablation']} ablation): "
        f"F(C)/F(M) = {f['ratio']:.2f} with {f['n_heads']} heads ({f['share_of_heads']:.1%}); with the negative "
        f"name movers kept too {f['with_negative']:.2f}; F(∅)/F(M) = {f['empty'] / f['model']:.2f}.\n",
        "| class | heads (path-patching effect) |", "|---|---|",
    ]
    roles: dict[str, list[str]] = {}
    for h in res["heads"] + res["backup_heads"]:
        roles.setdefault(h["role"], []).append(f"{h['id']} ({h['path_effect']:+.2f})")
    lines += [f"| {role} | {', '.join(heads)} |" for role, heads in roles.items()]
    lines += ["", "| knock-out | logit diff | drop |", "|---|---|---|"]
    lines += [f"| {k['role']} ({len(k['heads'])}) | {k['logit_diff']:.2f} | {k['drop']:+.0%} |" for k in res["knockouts"]]
    lines.append("\nWhat limits the figure: every pair is processed on its own (15 templates of different lengths); "
                 "the path-patching stages into keys and values at S2 and S1+1 run every later position through "
                 "every later layer for each sender.")
    return "\n".join(lines)
