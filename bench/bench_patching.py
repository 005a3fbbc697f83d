"""Activation patching on SmolLM2-135M (issue 12): head patching (30 layers × 9 heads, all positions)
and residual patching (30 layers × every position) of an IOI pair of ~16 and ~64 tokens, exact and
by attribution patching, against TransformerLens 4.x's `get_act_patch_*` (one forward per patch,
through `TransformerBridge`) and nnsight's batched invokes (bench/patching_peers.py), in one process
on the same model copy's weights and the same token ids.

Lantern is timed through its method module's `run` (what a worker runs), peers through their own
calls. Every variant gets one warm-up call and the median of REPEATS timed calls; a peer's warm-up
runs a few patches only (it warms the kernels and the allocator; its full run is what is timed).
Where a peer would run more than PEER_MAX_PATCHES patches, a fixed random subset (seed 0) is timed
and the figure extrapolated per patch; its equality is checked on that subset.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time

import torch

from bench.common import ROOT, fmt_s, load_smollm2
from bench.patching_peers import (
    POSITION_COMPONENTS,
    nnsight_effects,
    nnsight_model,
    one_token,
    tl_bridge,
    tl_effects,
    tl_tqdm_off,
)

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Anne gave a drink to"  # a third name
ANSWER, WRONG = " Mary", " John"
# neutral sentences prefixed to both prompts for the long pair
CONTEXT = ("It was a warm afternoon in the small town by the river. The market square was busy with people "
           "buying bread, apples and cheese, and children were playing near the old fountain. The baker had "
           "opened early, the post office was closed for lunch, and a few clouds drifted slowly over the hills "
           "beyond the bridge. Later that day, ")
TARGET_LONG = 64
COMPONENTS = ("attn_head", "residual")
# On 2 shared CPU cores one TransformerLens forward of SmolLM2 takes 0.1–1 s: one timed run each and a
# subset of patches for the peers keep the section within minutes (environment overrides for a quiet machine).
REPEATS = int(os.environ.get("LANTERN_BENCH_REPEATS", "1"))
PEER_MAX_PATCHES = int(os.environ.get("LANTERN_BENCH_PEER_PATCHES", "150"))
WARMUP_PATCHES = 6


def _pairs(lm) -> list[tuple[str, str]]:
    """The IOI pair as is (~16 tokens) and with neutral context in front (~64 tokens)."""
    words = CONTEXT.split(" ")
    best = None
    for k in range(1, len(words) + 1):  # the shortest prefix reaching the target length
        prefix = " ".join(words[:k]) + " "
        clean, corrupt = prefix + CLEAN[0].lower() + CLEAN[1:], prefix + CORRUPT[0].lower() + CORRUPT[1:]
        n = len(lm.encode(clean).ids)
        if n >= TARGET_LONG:
            best = (clean, corrupt)
            break
    assert best is not None, "CONTEXT is too short for TARGET_LONG tokens"
    out = [(CLEAN, CORRUPT), best]
    for clean, corrupt in out:
        a, b = lm.encode(clean).ids, lm.encode(corrupt).ids
        assert len(a) == len(b), (lm.token_strings(a), lm.token_strings(b))
    return out


def _request(lm, pair, component: str, method: str):
    from schemas.jobs import parse_job

    return parse_job({"kind": "activation_patching", "model": lm.id,
                      "input": {"clean_prompt": pair[0], "corrupted_prompt": pair[1], "answer": ANSWER,
                                "wrong_answer": WRONG},
                      "params": {"component": component, "method": method}})


def _time(fn, warm=None) -> tuple[float, object]:
    """One warm-up (`warm`, else `fn`), then the median of REPEATS calls; and the last call's value."""
    (warm or fn)()
    times, value = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def _patches(component: str, L: int, T: int, H: int) -> list[tuple[int, int | None, int | None]]:
    if component in POSITION_COMPONENTS:
        return [(layer, pos, None) for layer in range(L) for pos in range(T)]
    return [(layer, None, head) for layer in range(L) for head in range(H)]


def _index_df(component: str, patches):
    import pandas as pd

    if component in POSITION_COMPONENTS:
        return pd.DataFrame([(p[0], p[1]) for p in patches], columns=["layer", "pos"])
    return pd.DataFrame([(p[0], p[2]) for p in patches], columns=["layer", "head"])


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()))


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return head.strip() or "unknown"


def run() -> str:
    from workers.context import Context
    from workers.internals.batching import rows_per_batch
    from workers.methods import activation_patching

    # one thread: on 2 shared cores a second torch thread makes every op wait at its barrier (bench/results/patching.md)
    torch.set_num_threads(int(os.environ.get("LANTERN_BENCH_THREADS", "1")))
    load_before = os.getloadavg()
    lm = load_smollm2()
    tl_tqdm_off()
    bridge, nn = tl_bridge(lm), nnsight_model(lm)
    L, H = len(lm.layers), lm.facts()["n_heads"]
    a, b = one_token(lm, ANSWER), one_token(lm, WRONG)
    exact_rows = ["| tokens | component | patches | Lantern exact | forwards | positions computed / naive | "
                  "TransformerLens | forwards | Lantern × | max Δ | nnsight | forwards | Lantern × | max Δ |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    attr_rows = ["| tokens | component | attribution | forwards | positions computed | speed-up over exact | "
                 "r with exact |", "|---|---|---|---|---|---|---|"]
    rng = random.Random(0)
    for pair in _pairs(lm):
        clean, corrupt = lm.encode(pair[0]).ids, lm.encode(pair[1]).ids
        T = len(clean)
        for component in COMPONENTS:
            exact_req = _request(lm, pair, component, "exact")
            t_ours, res = _time(lambda: activation_patching.run(lm, exact_req, Context()))
            ours = torch.tensor(res.effects)
            flat = ours.flatten()
            patches = _patches(component, L, T, H)
            N = len(patches)
            idx = sorted(rng.sample(range(N), PEER_MAX_PATCHES)) if N > PEER_MAX_PATCHES else list(range(N))
            sub = [patches[i] for i in idx]
            k = len(sub)
            scale = N / k
            note = "" if k == N else f" (†{k} of {N})"
            warm = sub[:WARMUP_PATCHES]

            def tl_call(rows, comp=component):
                return tl_effects(bridge, comp, clean, corrupt, a, b, index_df=_index_df(comp, rows))

            t_tl, tl = _time(lambda: tl_call(sub), lambda: tl_call(warm))
            rows_per_trace = rows_per_batch(lm, T)  # nnsight keeps full-vocabulary logits per row: the grad budget

            def nn_call(rows, comp=component):
                return nnsight_effects(nn, lm, comp, clean, corrupt, a, b, rows, rows_per_trace)

            t_nn, nns = _time(lambda: nn_call(sub), lambda: nn_call(warm))
            d_tl = float((flat[idx] - tl.effects.flatten()).abs().max())
            d_nn = float((flat[idx] - nns.effects).abs().max())
            t_tl_full, t_nn_full = t_tl * scale, t_nn * scale
            tl_forwards = N + 2
            nn_forwards = 2 + -(-N // rows_per_trace)
            exact_rows.append(
                f"| {T} | {component} | {N} | {fmt_s(t_ours)} | {res.forwards} | "
                f"{res.positions_computed:,} / {res.positions_naive:,} | {fmt_s(t_tl_full)}{note} | {tl_forwards} | "
                f"**{t_tl_full / t_ours:.1f}×** | {d_tl:.1e} | {fmt_s(t_nn_full)}{note} | {nn_forwards} | "
                f"**{t_nn_full / t_ours:.1f}×** | {d_nn:.1e} |")
            print(exact_rows[-1], flush=True)

            attr_req = _request(lm, pair, component, "attribution")
            t_attr, attr = _time(lambda: activation_patching.run(lm, attr_req, Context()))
            r = _pearson(torch.tensor(attr.effects), ours)
            attr_rows.append(f"| {T} | {component} | {fmt_s(t_attr)} | {attr.forwards} | "
                             f"{attr.positions_computed:,} | **{t_ours / t_attr:.0f}×** | {r:.3f} |")
            print(attr_rows[-1], flush=True)
    load_after = os.getloadavg()
    return "\n".join([
        "## Activation patching (issue 12)",
        "",
        f"SmolLM2-135M fp32 on the CPU ({torch.get_num_threads()} threads), the IOI pair "
        f"`{CLEAN}` → answer `{ANSWER}` vs `{WRONG}`, corrupted with a third name (`Anne` for the second "
        "`John`); the long pair prefixes neutral sentences to both. Metric: logit difference at the last "
        "position, effects normalised to (patched − corrupted)/(clean − corrupted). `attn_head`: 30 layers × "
        "9 heads, every position; `residual`: 30 layers × every position. Lantern: `activation_patching` "
        "`run` (batched, each row starts at its layer from the kept residual and reuses the KV prefix before "
        "its position). TransformerLens 4.3.0: `TransformerBridge` around a copy of the same HF model, "
        "`get_act_patch_resid_pre` / `get_act_patch_attn_head_out_all_pos` (one forward per patch, plus the "
        "clean run with cache and the corrupted baseline). nnsight 0.8.1: `LanguageModel` around a copy, a "
        "clean trace, then traces of many `tracer.invoke(corrupted)` each patching one slice in place "
        f"(rows per trace = 2048 tokens / prompt length, as nnsight keeps full-vocabulary logits per row). "
        f"Median of {REPEATS} runs after one warm-up. `max Δ`: largest |difference| of normalised effects "
        "from Lantern's on the patches the peer ran. "
        f"† the peer ran a fixed random subset of {PEER_MAX_PATCHES} patches (seed 0); its time is "
        "extrapolated per patch to the full grid (forwards are the full grid's).",
        "",
        *exact_rows,
        "",
        "Attribution patching (the first-order estimate from 2 forwards and 1 backward, counted as 2 "
        "forwards): speed-up over Lantern's own exact run above, and Pearson r of its normalised effects with "
        "the exact ones over the whole grid.",
        "",
        *attr_rows,
        "",
        f"Commit {_commit()} (working tree shared with other engineers' uncommitted edits). Load average "
        f"(1, 5, 15 min) before: {load_before[0]:.1f}, {load_before[1]:.1f}, {load_before[2]:.1f}; after: "
        f"{load_after[0]:.1f}, {load_after[1]:.1f}, {load_after[2]:.1f} on {os.cpu_count()} cores shared with "
        "other engineers' test runs: absolute times are noisy, the ratios less so (each row's variants ran "
        "back to back). What limits the figures: on 2 CPU cores every variant is compute-bound on the same "
        "matrix products, so Lantern's gain is the work it skips (positions computed vs naive) and the "
        "forwards it merges, not faster kernels; TransformerLens's bridge also runs eager attention and "
        "full-vocabulary logits at every position; nnsight batches rows like Lantern but recomputes every "
        "layer and position of every row and the full logits.",
    ])


if __name__ == "__main__":
    print(run())
