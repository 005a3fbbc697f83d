"""The issue-13 benchmark: the IOI circuit's path patching written naively with TransformerLens
(one forward per path patch), against Lantern's `circuit` job, on the same 64 ABC pairs (seed 0).

Naive TransformerLens (4.3, `TransformerBridge` around a copy of the same HF model), as in the
ARENA / TransformerLens IOI path-patching code, with Lantern's definition of a path
(workers/patching/path.py): every component that is not a receiver is frozen at its clean value,
MLPs included.

- Receivers that are heads' q, k or v (S-inhibition, induction, previous-token stages), 2 forwards
  per sender per pair: (1) the clean input with the sender head's output `hook_z` set to its
  corrupted value and every other head's `hook_z` and every MLP's output frozen at their clean
  values, capturing the receivers' `hook_q` / `hook_k` / `hook_v`; (2) the clean input with only
  the receivers' inputs at the stage's position replaced by the captured values; its logits give
  the metric.
- The logits at END (name-mover and backup stages), 1 forward per sender per pair: (1) alone; with
  every other component frozen, the final residual is the clean one plus the sender's change.

Stages, senders and receivers are circuit.py's, built from the heads the 64-pair Lantern run found
(bench/results/circuit.json). A fixed random subset (seed 0) of SENDERS senders × PAIRS pairs per
stage is run and timed; the naive pipeline's seconds are the measured seconds per path patch of
each stage times that stage's full count, plus the plain forwards every pipeline runs (clean and
corrupted caches, and the same again under the knock-out for the backup stage; faithfulness and
knock-outs) at the measured seconds of a plain TransformerLens forward. The backup stage is timed
as the name-mover stage (the same forwards, plus the knock-out's hooks). Lantern's side is the
whole job's seconds from bench/results/circuit.md. Equality: on the subset, each naive per-pair
normalised effect, (patched − clean mean) / (clean mean − corrupted mean) over the 64 pairs, against
Lantern's `path_patched_metrics` for the same pair and senders.
"""

from __future__ import annotations

import json
import os
import random
import re
import time

import torch

from bench.common import load_smollm2
from bench.patching_peers import tl_bridge
from bench.run import RESULTS

N_PAIRS = 64
SENDERS = int(os.environ.get("LANTERN_BENCH_CIRCUIT_SENDERS", "20"))
PAIRS = int(os.environ.get("LANTERN_BENCH_CIRCUIT_PAIRS", "4"))
Head = tuple[int, int]
# measured with the receivers of the induction stage one layer at a time (see the report in the section)
SPLIT_NOTE = ("The induction stage's receivers sit in two layers (the S-inhibition heads L19H2 and L20H0): there "
              "the two definitions part. Lantern lets the layer-19 receiver's changed output reach the layer-20 "
              "receiver (workers/patching/path.py: a receiver's output flows on to every later component, receivers"
              ' included); the ARENA code patches every receiver with its value from the one frozen run. With the '
              'receivers of one layer at a time the two agree within 1.2e-6 (pair 0, five senders: 1.2e-6 for L20H0'
              ' alone, 4.9e-7 for L19H2 alone, 5.3e-3 for both); every single-layer stage agrees within 1.5e-4.')


def _head(name: str) -> Head:
    layer, head = name[1:].split("H")
    return int(layer), int(head)


def _stages(res: dict, L: int, H: int, kv) -> list[dict]:
    """circuit.py's path-patching stages: senders, receiver site(s) and position, receiver heads."""
    roles: dict[Head, str] = {}
    for h in res["heads"]:
        roles.setdefault(_head(h["id"]), h["role"])
    everyone = [(layer, h) for layer in range(L) for h in range(H)]

    def of(role: str) -> list[Head]:
        return [h for h, r in roles.items() if r == role]
    out = [{"name": "name movers (→ logits)", "senders": everyone, "sites": (), "position": "end", "targets": []}]
    for receiver_role, sites, position, label in (("name_mover", ("q",), "end", "S-inhibition (→ name movers' q)"),
                                                  ("s_inhibition", ("k", "v"), "s2", "induction (→ S-inh. k, v)"),
                                                  ("induction", ("k",), "s1_plus_1", "previous token (→ induction k)")):
        targets = of(receiver_role)
        if targets:
            senders = [h for h in everyone if h[0] < max(t[0] for t in targets)]
            out.append({"name": label, "senders": senders, "sites": sites, "position": position, "targets": targets})
    return out


def _at(run, position: str) -> int:
    p = run.pair.positions
    return {"end": len(run.clean) - 1, "s2": p.s2, "s1_plus_1": p.s1 + 1}[position]


class NaiveTL:
    """Path patching one forward (or two) per sender per pair on a TransformerBridge."""

    def __init__(self, bridge, L: int, kv):
        self.bridge, self.L, self.kv = bridge, L, kv
        self.forwards = 0

    def caches(self, clean: list[int], corrupt: list[int]):
        keep = lambda name: name.endswith("attn.hook_z") or name.endswith("hook_mlp_out")  # noqa: E731
        with torch.no_grad():
            _, c = self.bridge.run_with_cache(torch.tensor([clean]), names_filter=keep)
            _, d = self.bridge.run_with_cache(torch.tensor([corrupt]), names_filter=lambda n: n.endswith("attn.hook_z"))
        self.forwards += 2
        return c, d

    def _frozen(self, clean_cache, corrupt_cache, sender: Head) -> list:
        def z_hook(layer: int):
            def fn(z, hook):
                out = clean_cache[f"blocks.{layer}.attn.hook_z"].clone()
                if layer == sender[0]:
                    out[:, :, sender[1]] = corrupt_cache[f"blocks.{layer}.attn.hook_z"][:, :, sender[1]]
                return out
            return fn

        def mlp_hook(layer: int):
            return lambda x, hook: clean_cache[f"blocks.{layer}.hook_mlp_out"]
        return ([(f"blocks.{layer}.attn.hook_z", z_hook(layer)) for layer in range(self.L)]
                + [(f"blocks.{layer}.hook_mlp_out", mlp_hook(layer)) for layer in range(self.L)])

    def effect(self, stage: dict, clean: list[int], at: int, caches, sender: Head, answer: int, wrong: int) -> float:
        """The metric (logit difference at END) with `sender` patched along its paths into the stage's receivers."""
        clean_cache, corrupt_cache = caches
        ids = torch.tensor([clean])
        frozen = self._frozen(clean_cache, corrupt_cache, sender)
        with torch.no_grad():
            if not stage["sites"]:  # the logits: everything frozen but the sender
                logits = self.bridge.run_with_hooks(ids, fwd_hooks=frozen)
                self.forwards += 1
                return float(logits[0, -1, answer] - logits[0, -1, wrong])
            names = {(s, layer): f"blocks.{layer}.attn.hook_{s}" for s in stage["sites"]
                     for layer in {t[0] for t in stage["targets"]}}
            captured: dict = {}

            def capture(key):
                def fn(x, hook):
                    captured[key] = x.clone()
                return fn
            self.bridge.run_with_hooks(ids, fwd_hooks=frozen + [(n, capture(k)) for k, n in names.items()])

            def patch(key):
                s, layer = key
                units = sorted({self.kv[h] if s in ("k", "v") else h
                                for t_layer, h in stage["targets"] if t_layer == layer})

                def fn(x, hook):
                    x = x.clone()
                    x[:, at, units] = captured[key][:, at, units]
                    return x
                return fn
            logits = self.bridge.run_with_hooks(ids, fwd_hooks=[(n, patch(k)) for k, n in names.items()])
            self.forwards += 2
            return float(logits[0, -1, answer] - logits[0, -1, wrong])


def _lantern_seconds() -> tuple[float, int] | None:
    md = RESULTS / "circuit.md"
    if not md.exists():
        return None
    m = re.search(r"\*\*(\d+) s\*\*, (\d+) forwards", md.read_text())
    return (float(m.group(1)), int(m.group(2))) if m else None


def run() -> str:
    from schemas.datasets import IoiDataset
    from schemas.limits import Limits
    from workers.datasets.ioi import ioi_pairs
    from workers.internals.capture import kv_head_of
    from workers.methods.circuit import _prepare, _receivers
    from workers.patching.exact import Counts
    from workers.patching.path import Receiver, path_patched_metrics

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    lm = load_smollm2()
    res = json.loads((RESULTS / "circuit.json").read_text())
    L, H = len(lm.layers), lm.facts()["n_heads"]
    kv = [int(g) for g in kv_head_of(lm)]
    f_clean, f_corrupt = res["behaviour"]["logit_diff"], res["behaviour"]["corrupted_logit_diff"]
    spread = f_clean - f_corrupt
    pairs = ioi_pairs(lm, IoiDataset(n=N_PAIRS, seed=0))
    same = [p.clean_prompt for p in pairs] == [p["clean_prompt"] for p in res["pairs"]]
    assert same, "bench/results/circuit.json holds another dataset"
    bridge = tl_bridge(lm)
    naive = NaiveTL(bridge, L, kv)
    rng = random.Random(0)
    stages = _stages(res, L, H, kv_head_of(lm))
    counts = Counts()
    rows = ["| stage | senders | forwards per sender per pair | naive TL s per path patch | path patches in the job "
            "(64 pairs) | naive TL s (extrapolated) | max Δ vs Lantern |", "|---|---|---|---|---|---|---|"]
    total, max_delta = 0.0, 0.0
    chosen = sorted(rng.sample(range(N_PAIRS), PAIRS))
    runs = {k: _prepare(lm, pairs[k], k, Limits(), counts) for k in chosen}
    tl_caches = {k: naive.caches(runs[k].clean, runs[k].corrupt) for k in chosen}
    naive.effect(stages[0], runs[chosen[0]].clean, 0, tl_caches[chosen[0]], (0, 0), 1, 2)  # warm-up
    per_stage_s = {}
    for stage in stages:
        senders = sorted(rng.sample(stage["senders"], min(SENDERS, len(stage["senders"]))))
        t_naive, deltas = 0.0, []
        for k in chosen:
            run_k = runs[k]
            at = _at(run_k, stage["position"])
            t0 = time.perf_counter()
            ours_tl = [naive.effect(stage, run_k.clean, at, tl_caches[k], s, run_k.metric.answer, run_k.metric.wrong)
                       for s in senders]
            t_naive += time.perf_counter() - t0
            if stage["sites"]:
                parts = [_receivers(stage["targets"], s, stage["position"], kv_head_of(lm)) for s in stage["sites"]]
                receivers = [r for part in parts for r in part(run_k)]
            else:
                receivers = [Receiver("logits", L, positions=(at,))]
            lantern = path_patched_metrics(lm, senders, receivers, run_k.base, run_k.z_clean, run_k.z_corrupt,
                                           run_k.metric, counts)
            norm_tl = (torch.tensor(ours_tl, dtype=torch.float64) - f_clean) / spread
            norm_ours = (lantern.double() - f_clean) / spread
            deltas.append(float((norm_tl - norm_ours).abs().max()))
        per_patch = t_naive / (len(senders) * len(chosen))
        per_stage_s[stage["name"]] = per_patch
        full = len(stage["senders"]) * N_PAIRS
        total += per_patch * full
        max_delta = max(max_delta, max(deltas))
        rows.append(f"| {stage['name']} | {len(stage['senders'])} | {2 if stage['sites'] else 1} | {per_patch:.3f} | "
                    f"{full:,} | {per_patch * full:,.0f} | {max(deltas):.1e} |")
        print(rows[-1], flush=True)
    # backup name movers: every head → logits again under the name movers' knock-out
    backup = per_stage_s[stages[0]["name"]] * L * H * N_PAIRS
    total += backup
    rows.append(f"| backup name movers (→ logits, name movers knocked out) | {L * H} | 1 | "
                f"{per_stage_s[stages[0]['name']]:.3f} (as name movers) | {L * H * N_PAIRS:,} | {backup:,.0f} | — |")
    # plain forwards every pipeline runs: per pair clean and corrupted caches (and again under the
    # knock-out), and the ablation runs (circuit, with negatives, empty, one knock-out per class)
    t0 = time.perf_counter()
    for k in chosen:
        naive.caches(runs[k].clean, runs[k].corrupt)
    plain = (time.perf_counter() - t0) / (2 * len(chosen))
    n_classes = len({h["role"] for h in res["heads"]})
    plain_forwards = N_PAIRS * (4 + 3 + n_classes)
    total += plain * plain_forwards
    rows.append(f"| plain forwards (caches, faithfulness, knock-outs) | — | — | {plain:.3f} per forward | "
                f"{plain_forwards:,} forwards | {plain * plain_forwards:,.0f} | — |")
    naive_forwards = sum(len(s["senders"]) * (2 if s["sites"] else 1) for s in stages) * N_PAIRS + L * H * N_PAIRS \
        + plain_forwards
    lantern = _lantern_seconds()
    load_after = os.getloadavg()
    ratio = f"**{total / lantern[0]:.1f}×**" if lantern else "—"
    summary = (f"Naive TransformerLens pipeline: **{total:,.0f} s** ({total / 3600:.1f} h) extrapolated, "
               f"{naive_forwards:,} forwards; Lantern's whole `circuit` job: "
               + (f"**{lantern[0]:.0f} s**, {lantern[1]:,} forwards (bench/results/circuit.md): Lantern {ratio} "
                  "faster (target ≥ 5×)." if lantern else "not measured (run `python -m bench.run circuit`)."))
    return "\n".join([
        "## Circuit (IOI): Lantern vs the pipeline written naively with TransformerLens",
        "",
        f"SmolLM2-135M fp32, CPU, 1 thread, the 64 ABC pairs (seed 0) and stages of the section above (senders and "
        f"receivers as workers/methods/circuit.py builds them from the heads found). Naive: TransformerLens 4.3 "
        f"`TransformerBridge` around a copy of the same HF model, one forward per path patch as in the ARENA / "
        f"TransformerLens IOI path-patching code: for a receiver stage, the clean run with the sender's `hook_z` "
        f"corrupted and every other head's `hook_z` and every MLP output frozen at clean, capturing the receivers' "
        f"q/k/v, then the clean run with those inputs patched at the stage's position (2 forwards per sender per "
        f"pair); for the logits stages the first forward alone. Timed on a fixed random subset (seed 0) of "
        f"{SENDERS} senders × {PAIRS} pairs (pairs {chosen}) per stage and extrapolated per path patch to the full "
        f"job; the backup stage at the name-mover stage's rate. `max Δ`: largest |difference| of the per-pair "
        f"normalised effect (patched − clean) / (clean − corrupted) from Lantern's `path_patched_metrics` on the "
        f"same pairs and senders. Code: bench/bench_circuit_peers.py.",
        "",
        *rows,
        "",
        SPLIT_NOTE,
        "",
        summary,
        "",
        f"Load average (1, 5, 15 min) before: {load_before[0]:.1f}, {load_before[1]:.1f}, {load_before[2]:.1f}; "
        f"after: {load_after[0]:.1f}, {load_after[1]:.1f}, {load_after[2]:.1f} on {os.cpu_count()} cores shared "
        "with other engineers' runs. What limits the figure: every naive path patch is one or two full forwards "
        "(every layer, every position, the full 49k-wide logits at every position, Python hooks on 60 hook points); "
        "Lantern batches the senders of a stage and each row starts at the earliest receiver's layer and position "
        "from the clean run's residual and KV prefix, so the logits and query stages cost one position over a few "
        "layers per sender.",
    ])


if __name__ == "__main__":
    print(run())
