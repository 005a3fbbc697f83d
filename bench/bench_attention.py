"""Attention weights, norms and summed norms (all three measures, every layer and head) on SmolLM2
at 128 and 512 tokens: Lantern's per-layer hooks with Gram-matrix summed norms, against a naive
per-layer materialisation of the (heads, n, n, d) tensor of weighted vectors (in-house code: the
algorithm of the Kobayashi et al. reference implementation), in one process on the same input. The
comparison with the real TransformerLens is bench/bench_attention_peers.py.

Runs on CUDA when there is one (bf16 model, as a worker runs it), else on the CPU (fp32).
`python -m bench.bench_attention` on a GPU machine writes its section to $OUT (the bundled GGUF is
too large to carry there: a model of SmolLM2's shape with random weights stands in; time and memory
do not depend on the weight values).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import torch

from bench.common import fmt_s, load_smollm2, prompt_of_tokens
from workers.internals.capture import attention_parts, forward, head_value_vectors
from workers.methods.attention import attention_maps

LENGTHS = (128, 512)
# On a CPU the materialising variants take minutes at 512 tokens (16× the 128-token work, memory-bound
# on a 5.4 GB tensor per layer): they run there up to this length; the GPU section has both lengths.
CPU_MATERIALISE_MAX = 128
ALL = ("weights", "norms", "summed_norms")


def ours(lm, ids):
    n_layers, n_heads = len(lm.layers), lm.facts()["n_heads"]
    return attention_maps(lm, ids, list(range(n_layers)), list(range(n_heads)), ALL)


def _materialised(lm, layer, alpha, v):
    f = head_value_vectors(lm, layer, v)  # (H, n, d)
    weighted = alpha.float()[..., None] * f[:, None, :, :]  # (H, n, n, d)
    return {"weights": alpha.float(), "norms": weighted.norm(dim=-1), "summed_norms": weighted.sum(0).norm(dim=-1)}


def naive(lm, ids):
    """Per layer, inside the forward: the (heads, n, n, d) tensor, then its norms."""
    out = {}

    def on_layer(layer, alpha, v):
        out[layer] = _materialised(lm, layer, alpha, v)
    with torch.no_grad(), attention_parts(lm, list(range(len(lm.layers))), on_layer):
        forward(lm, ids)
    return out


VARIANTS = {"Lantern (hooks, Gram summed norms)": ours,
            "naive materialisation (in-house: the reference code's algorithm)": naive}


def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure(lm, fn, ids, repeats: int):
    """Median seconds and the peak memory the call adds (CUDA: allocator peak; CPU: peak RSS)."""
    cuda = lm.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn(lm, ids)  # warm-up
    sync()
    times, peak = [], 0
    for _ in range(repeats):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
            base = _rss_kb("VmRSS") * 1024
        t0 = time.perf_counter()
        out = fn(lm, ids)
        sync()
        times.append(time.perf_counter() - t0)
        peak = max(peak, (torch.cuda.max_memory_allocated() if cuda else _rss_kb("VmHWM") * 1024) - base)
        del out
    return sorted(times)[len(times) // 2], peak


def max_diff(a, b, measure_name):
    return max(float((a[i][measure_name] - b[i][measure_name]).abs().max()) for i in a)


def model():
    if torch.cuda.is_available():
        from bench.gpu_check import model as smollm2_shaped

        return smollm2_shaped(torch.bfloat16), "a LLaMA of SmolLM2-135M's shape with random weights, bf16"
    return load_smollm2(), "SmolLM2-135M-Instruct (bundled GGUF, dequantised), fp32"


def ids_of(lm, n):
    if lm.id == "smollm2-135m":
        return lm.encode(prompt_of_tokens(lm, n)).ids[:n]
    return torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(n)).tolist()


def _forward_eager(lm, ids):
    with torch.no_grad(), attention_parts(lm, [], lambda *a: None, with_values=False):
        forward(lm, ids)


def collect(lm=None, what: str = "", lengths=LENGTHS) -> dict:
    if lm is None:
        lm, what = model()
    cuda = lm.device.type == "cuda"
    rows, checks = [], []
    for n in lengths:
        ids = ids_of(lm, n)
        reps = 5 if cuda else (3 if n <= 128 else 1)
        for name, fn in VARIANTS.items():
            if not cuda and n > CPU_MATERIALISE_MAX and fn is not ours:
                rows.append({"tokens": n, "variant": name, "seconds": None, "peak_bytes": None, "repeats": 0})
                continue
            secs, peak = measure(lm, fn, ids, reps)
            rows.append({"tokens": n, "variant": name, "seconds": secs, "peak_bytes": peak, "repeats": reps})
            print(rows[-1], flush=True)
        check = {"tokens": n, "forward_seconds": measure(lm, _forward_eager, ids, reps)[0]}
        if cuda or n <= CPU_MATERIALISE_MAX:
            a, b = ours(lm, ids), naive(lm, ids)
            check["max_abs_diff_vs_naive"] = {m: max_diff(a, b, m) for m in ALL}
            del a, b
        checks.append(check)
    device = torch.cuda.get_device_name(0) if cuda else f"CPU, {torch.get_num_threads()} threads"
    return {"device": device, "torch": torch.__version__, "model": what, "rows": rows, "checks": checks}


def section(data: dict) -> str:
    memory = ("peak RSS over the RSS before the call: a lower bound, since heap the process kept from earlier "
              "calls is reused" if data["device"].startswith("CPU") else "CUDA allocator peak")
    lines = [f"## Attention weights and norms (`attention`, all three measures, every layer and head) — "
             f"{data['device']}", "",
             f"{data['model']}; torch {data['torch']}. Each variant returns the same tensors (weights and norms "
             f"per head, summed norms per layer) for one sequence; peak memory is what the call adds to the "
             f"loaded model ({memory}). Medians of the repeats shown.", "",
             "| tokens | variant | time | peak memory added | repeats |", "|---|---|---|---|---|"]
    lines += [f"| {r['tokens']} | {r['variant']} | {fmt_s(r['seconds'])} | "
              + (f"{r['peak_bytes'] / 2**20:,.0f} MiB | {r['repeats']} |" if r["repeats"] else
                 f"not run on the CPU beyond {CPU_MATERIALISE_MAX} tokens | — |") for r in data["rows"]]
    lines.append("")
    for c in data["checks"]:
        line = f"- {c['tokens']} tokens: the eager forward alone takes {fmt_s(c['forward_seconds'])}"
        if d := c.get("max_abs_diff_vs_naive"):
            line += (f"; largest difference from the naive tensors: weights {d['weights']:.1e}, "
                     f"norms {d['norms']:.1e}, summed norms {d['summed_norms']:.1e}")
        lines.append(line + ".")
    lines += ["", "The naive tensor is heads × n × n × d floats per layer (9 × 512 × 512 × 576 × 4 B = 5.4 GB at "
              "512 tokens); Lantern's summed norms need the per-key heads × heads Gram matrices and two "
              "heads × n × n arrays instead, and most of its peak is the returned maps themselves "
              "(2 × 30 × 9 × n² floats for weights and norms). The real TransformerLens, run as a user "
              "writes it, is in the next section (bench/bench_attention_peers.py).", ""]
    return "\n".join(lines)


def run() -> str:
    return section(collect())


if __name__ == "__main__":
    data = collect()
    text = section(data)
    print(text)
    if out := os.environ.get("OUT"):
        Path(out, "attention_gpu.json").write_text(json.dumps(data, indent=1))
        Path(out, "attention_gpu.md").write_text(text)
    sys.exit(0)
