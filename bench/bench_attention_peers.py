"""Attention weights and norms (Kobayashi et al. 2020: ‖α_hij f_h(x_j)‖ per head and ‖Σ_h α_hij f_h(x_j)‖
per layer, with f_h(x_j) = x_j W_V^h W_O^h) on SmolLM2-135M, every layer and head: Lantern against the
real TransformerLens (4.3, `TransformerBridge` around a copy of the same HF model, as
bench/patching_peers.py boots it), in one process on the same token ids.

- Lantern: `attention_maps` (workers/methods/attention.py: one forward, per-layer hooks, Gram-matrix
  summed norms; tensors), and the whole `attention` kind (`run`: the same plus the JSON-ready result,
  nested lists of every map);
- TransformerLens, as a user writes it with its cache: `run_with_cache` keeping `hook_pattern` and
  `hook_v`, then per layer the value vectors of each query head (the shared KV head under
  grouped-query attention) through that head's `W_O`, the (heads, q, k, d_model) tensor of weighted
  vectors, and its norms.

The maps are checked equal (within float error) before anything is timed. `python -m bench.run
attention_peers`.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import torch

from bench.common import fmt_s, load_smollm2, prompt_of_tokens

LENGTHS = tuple(int(n) for n in os.environ.get("ATTENTION_PEERS_LENGTHS", "64,128,256").split(","))
# (extra warm-up, repeats), the same for every variant; the agreement check before them is one untimed
# run of each variant already
SCHEDULE = {64: (0, 2), 128: (1, 3), 256: (1, 1)}
REPEATS = os.environ.get("ATTENTION_PEERS_REPEATS")  # overrides the schedule's repeats (a busy machine)
MEASURES = ("weights", "norms", "summed_norms")


def tl_norms(bridge, ids: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """TransformerLens: run_with_cache, then ‖α f‖ per head and ‖Σ_h α f‖ per layer from the cache."""
    cfg = bridge.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    tokens = torch.tensor([ids], device=cfg.device)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern") or name.endswith("attn.hook_v"))
        out = {}
        for layer in range(cfg.n_layers):
            pattern = cache["pattern", layer][0]  # (H, q, k)
            v = cache["v", layer][0].repeat_interleave(cfg.n_heads // n_kv, dim=1)  # (k, H, d_head)
            f = torch.einsum("khd,hdm->hkm", v, bridge.W_O[layer])  # (H, k, d_model): f_h(x_k)
            weighted = torch.einsum("hqk,hkm->hqkm", pattern, f)  # α_hqk f_h(x_k)
            out[layer] = {"weights": pattern, "norms": weighted.norm(dim=-1),
                          "summed_norms": weighted.sum(0).norm(dim=-1)}
    return out


def lantern_maps(lm, ids: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    from workers.methods.attention import attention_maps

    n_layers, n_heads = len(lm.layers), lm.facts()["n_heads"]
    return attention_maps(lm, ids, list(range(n_layers)), list(range(n_heads)), MEASURES)


def lantern_kind(lm, prompt: str):
    """The whole `attention` kind on `prompt` (its token ids are `lm.encode(prompt).ids`)."""
    from bench.kinds import run_kind

    from schemas.limits import Limits

    # every map of every layer is 2 × 30 × 9 × n² floats as JSON: over the default 16 MB result limit
    # from ~40 tokens on, so the limit is raised as an operator would for such jobs
    return run_kind(lm, "attention", {"prompt": prompt}, {"measures": list(MEASURES)},
                    limits=Limits(max_result_bytes=2**34))


def kind_maps(result) -> dict[int, dict[str, torch.Tensor]]:
    return {layer.layer: {m: torch.tensor(getattr(layer, m)) for m in MEASURES} for layer in result.layers}


def max_diffs(a: dict, b: dict) -> dict[str, float]:
    """Largest |difference| per measure, and the largest value (the scale it is relative to)."""
    return {m: max(float((a[i][m].float() - b[i][m].float()).abs().max()) for i in a) for m in MEASURES} | {
        f"max_{m}": max(float(a[i][m].abs().max()) for i in a) for m in MEASURES}


def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def timed_interleaved(calls: dict, warmup: int, repeats: int) -> dict[str, dict]:
    """Median seconds and peak RSS added per call (a lower bound: heap kept from earlier calls is
    reused), the variants run in turn each round."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    peaks = dict.fromkeys(calls, 0)
    for r in range(warmup + repeats):
        for name, fn in calls.items():
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS
            base = _rss_kb("VmRSS") * 1024
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
                peaks[name] = max(peaks[name], _rss_kb("VmHWM") * 1024 - base)
            del out
        print(r, {k: round(v[-1], 2) for k, v in times.items() if v}, flush=True)
    return {k: {"seconds": statistics.median(times[k]), "peak_bytes": peaks[k]} for k in calls}


def load_avg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def collect() -> dict:
    from bench.patching_peers import tl_bridge

    torch.set_num_threads(1)
    lm = load_smollm2()
    bridge = tl_bridge(lm)
    before = load_avg()
    rows = []
    for n in LENGTHS:
        prompt = prompt_of_tokens(lm, n)
        ids = lm.encode(prompt).ids
        ours, theirs, kind = lantern_maps(lm, ids), tl_norms(bridge, ids), lantern_kind(lm, prompt)
        check = {"maps_vs_tl": max_diffs(ours, theirs), "kind_vs_tl": max_diffs(kind_maps(kind), theirs)}
        print(n, check, flush=True)
        del ours, theirs, kind
        warmup, repeats = SCHEDULE.get(n, (1, 1))
        repeats = int(REPEATS) if REPEATS else repeats
        timed = timed_interleaved({"Lantern (attention_maps, tensors)": lambda: lantern_maps(lm, ids),
                                   "Lantern (attention kind, whole result)": lambda: lantern_kind(lm, prompt),
                                   "TransformerLens 4.3 (run_with_cache + norms)": lambda: tl_norms(bridge, ids)},
                                  warmup, repeats)
        rows.append({"tokens": len(ids), "check": check, "timed": timed, "warmup": warmup, "repeats": repeats})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"rows": rows, "load_before": before, "load_after": load_avg(), "commit": commit}


def section(data: dict) -> str:
    lines = ["## Attention weights and norms: Lantern vs TransformerLens (CPU, 1 thread)", "",
             "SmolLM2-135M fp32, all 30 layers × 9 heads, the three measures (weights α, norms ‖α f_h(x)‖ per "
             "head, summed norms ‖Σ_h α f_h(x)‖ per layer) of one natural-text sequence. TransformerLens 4.3.0: "
             "`TransformerBridge` around a copy of the same HF model (eager attention), `run_with_cache` keeping "
             "`hook_pattern` and `hook_v`, then per layer f_h = v (repeated over the query heads of each KV "
             "head) · `W_O[layer]`, the (heads, q, k, d_model) tensor α f and its norms, as a user writes "
             "it (tl_norms in the code). Lantern: `attention_maps` (the tensors the `attention` kind builds its "
             "result from) and the kind's whole `run` (the same plus the result's nested lists). Peak memory: "
             "peak RSS over the RSS before the call (a lower bound: heap kept from earlier calls is reused). "
             "Medians; the three variants ran interleaved with the same warm-up (the agreement check's run of "
             "each, plus the extra warm-up shown) and repeats. Code: "
             "bench/bench_attention_peers.py.", "",
             "| tokens | variant | time | peak memory added | Lantern × | runs |", "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        tl = r["timed"]["TransformerLens 4.3 (run_with_cache + norms)"]["seconds"]
        for name, t in r["timed"].items():
            ratio = "—" if name.startswith("TransformerLens") else f"**{tl / t['seconds']:.1f}×**"
            lines.append(f"| {r['tokens']} | {name} | {fmt_s(t['seconds'])} | {t['peak_bytes'] / 2**20:,.0f} MiB | "
                         f"{ratio} | 1 + {r['warmup']} warm-up, {r['repeats']} timed |")
    lines += ["", "Agreement, checked before timing (largest |difference| from TransformerLens's maps; the largest "
              "value in parentheses):", ""]
    for r in data["rows"]:
        for key, label in (("maps_vs_tl", "attention_maps"), ("kind_vs_tl", "the kind's result")):
            c = r["check"][key]
            lines.append(f"- {r['tokens']} tokens, {label}: weights {c['weights']:.1e} ({c['max_weights']:.2f}), "
                         f"norms {c['norms']:.1e} ({c['max_norms']:.2f}), summed norms {c['summed_norms']:.1e} "
                         f"({c['max_summed_norms']:.2f}).")
    lines += ["", f"Commit {data['commit']}. Load average (1, 5, 15 min) before: {data['load_before']}; after: "
              f"{data['load_after']}, on {os.cpu_count()} cores (other benchmarks may share them). What limits the figures: the forward is the same eager "
              "forward on both sides (TransformerLens adds its hook points); the difference is the norm "
              "computation: the per-head and summed norms as written with the cache materialise heads × n × n × "
              "d_model floats per layer (9 × 256 × 256 × 576 × 4 B = 1.4 GB at 256 tokens, 5.4 GB at 512, which "
              "is why 512 is not run here), where Lantern's per-head norms are α‖f‖ and its summed norms come "
              "from per-key heads × heads Gram matrices. The kind's whole `run` adds building the result: "
              "2 × 30 × 9 × n² floats as nested lists, validated.", ""]
    return "\n".join(lines)


def run() -> str:
    return section(collect())


if __name__ == "__main__":
    print(run())
