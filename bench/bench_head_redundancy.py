"""head_redundancy on SmolLM2-135M (issue 15): the whole job on 32 sentences (seconds, forwards), and
the exact masked-loss importance of all 270 heads batched (`workers.heads.masking.head_losses`, inside
that job: one row per (head, text), rows starting at the masked head's layer from the kept residual
stream) against two plain loops on the same weights and token ids:

- one forward per head: the 32 sentences right-padded into one batch with an attention mask, the
  head's output zeroed by the patching engine's ablation hooks, the loss from the logits;
- one forward per (head, sentence), unpadded.

The loops are timed on a fixed subset of heads (every layer represented) and extrapolated per head
(their cost does not depend on which head is masked); their losses are compared with the batched
ones on that subset ("equal numbers"). One torch thread; CPU time of the process and wall clock are
both reported, with the machine's load average, since the cores are shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import torch

from bench.common import ROOT, load_smollm2

SENTENCES = [
    "The cat sat on the mat and watched the birds outside.",
    "A dog chased the ball across the park.",
    "The capital of France is Paris.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She opened the window to let in the fresh morning air.",
    "The train to London leaves at half past nine.",
    "My grandmother grows tomatoes and beans in her garden.",
    "The committee will announce its decision next week.",
    "He forgot his umbrella, so he got wet on the way home.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The children built a sandcastle on the beach.",
    "Please turn off the lights when you leave the room.",
    "The museum is closed on Mondays and public holidays.",
    "They walked along the river until the sun went down.",
    "The recipe calls for two cups of flour and three eggs.",
    "Our team won the match after extra time.",
    "The old bridge was repaired last summer.",
    "I read a fascinating book about the history of mathematics.",
    "The price of coffee has risen sharply this year.",
    "Birds fly south for the winter to find food.",
    "The teacher asked the students to write an essay about their holidays.",
    "A strong wind blew the leaves off the trees.",
    "The doctor told him to rest for a few days.",
    "Mount Everest is the highest mountain in the world.",
    "The library lends books, films and music for free.",
    "She played the piano beautifully at the concert.",
    "The company hired twenty new engineers in March.",
    "Rain is expected to continue throughout the weekend.",
    "The moon orbits the Earth about once a month.",
    "He painted the fence white and the door blue.",
    "The bakery on the corner sells fresh bread every morning.",
    "Two plus two is four, and three plus three is six.",
]
THRESHOLD = 0.2
TOLERANCE = 0.01
PER_HEAD_SUBSET = int(os.environ.get("LANTERN_BENCH_HR_HEADS", "10"))  # heads timed one forward each
PER_TEXT_SUBSET = int(os.environ.get("LANTERN_BENCH_HR_TEXT_HEADS", "2"))  # heads timed one forward per text
RESULTS = ROOT / "bench" / "results"
EXACT_PHASE = (0.33, 0.9)  # the progress fractions workers/methods/head_redundancy.py gives the exact importance


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def _subset(n_layers: int, n_heads: int, k: int) -> list[tuple[int, int]]:
    step = max(1, n_layers // k)
    return [(layer, (3 * i) % n_heads) for i, layer in enumerate(range(0, n_layers, step))][:k]


@torch.no_grad()
def per_head_loop(lm, ids: list[list[int]], head: tuple[int, int]) -> float:
    """One padded forward of every sentence with `head` zeroed; token-weighted next-token loss."""
    from workers.internals.hooks import hooks
    from workers.patching.ablation import ablation_hooks

    T = max(map(len, ids))
    x = torch.full((len(ids), T), lm.tokenizer.pad_token_id or 0)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for r, s in enumerate(ids):
        x[r, :len(s)], mask[r, :len(s)] = torch.tensor(s), 1
    forward, pre = ablation_hooks(lm, [head], None)
    with hooks(forward=forward, pre=pre):
        logits = lm.model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()  # (K, T, V)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(), reduction="none")
    keep = mask[:, 1:].flatten().bool()
    return float(nll[keep].double().sum() / keep.sum())


@torch.no_grad()
def per_text_loop(lm, ids: list[list[int]], head: tuple[int, int]) -> float:
    """One unpadded forward per sentence with `head` zeroed; transformers' own loss."""
    from workers.internals.hooks import hooks
    from workers.patching.ablation import ablation_hooks

    forward, pre = ablation_hooks(lm, [head], None)
    total = n = 0.0
    with hooks(forward=forward, pre=pre):
        for s in ids:
            x = torch.tensor([s])
            total += float(lm.model(input_ids=x, labels=x, use_cache=False).loss) * (len(s) - 1)
            n += len(s) - 1
    return total / n


def measure() -> dict:
    from workers.heads import masking

    torch.set_num_threads(int(os.environ.get("LANTERN_BENCH_THREADS", "1")))
    lm = load_smollm2()
    ids = [lm.encode(s).ids for s in SENTENCES]
    L, H = len(lm.layers), masking.n_units(lm)
    heads = [(layer, h) for layer in range(L) for h in range(H)]
    out: dict = {"sentences": len(ids), "tokens": sum(map(len, ids)), "heads": len(heads),
                 "load_before": _load(), "threads": torch.get_num_threads()}

    # the whole job, as a worker runs it (random control on: the task-agnostic check). The exact
    # importance phase is timed inside it from the job's own progress reports (it runs between the
    # fractions EXACT_PHASE) and its forwards counted by a hook on the decoder while it runs.
    from bench.kinds import job_of
    from workers.context import Context
    from workers.internals.hooks import hooks
    from workers.methods import head_redundancy
    from workers.patching.exact import body

    marks: list[tuple[float, float, float]] = []  # (wall clock, fraction, CPU time)
    forwards_in_phase = [0]

    def progress(fraction: float) -> None:
        marks.append((time.perf_counter(), fraction, time.process_time()))

    def count(module, args, kwargs=None):
        f = marks[-1][1] if marks else 0.0
        if EXACT_PHASE[0] - 1e-9 <= f < EXACT_PHASE[1] - 1e-9:
            forwards_in_phase[0] += 1

    job = job_of(lm, "head_redundancy", {"texts": SENTENCES},
                 {"threshold": THRESHOLD, "tolerance": TOLERANCE, "random_control": True})
    t0, c0 = time.perf_counter(), time.process_time()
    with hooks(pre=[(body(lm), count)]):
        res = head_redundancy.run(lm, job, Context(progress=progress))
    out["job_s"], out["job_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    start = max((m for m in marks if m[1] <= EXACT_PHASE[0] + 1e-9), key=lambda m: m[0])
    end = min((m for m in marks if m[1] >= EXACT_PHASE[1] - 1e-9), key=lambda m: m[0])
    out["batched_s"], out["batched_cpu_s"] = end[0] - start[0], end[2] - start[2]
    out["batched_forwards"] = forwards_in_phase[0]
    out["batched_rows"] = len(heads) * len(ids)
    batched = [s.masked_loss for s in res.scores]
    out["job"] = {"forwards": res.forwards, "masked_rows": res.masked_rows, "base_loss": res.base_loss,
                  "clusters": [len(c) for c in res.clusters], "clustered": sum(len(c) for c in res.clusters),
                  "pruned": res.pruning.n_heads, "loss_after": res.pruning.loss_after,
                  "relative_change": res.pruning.relative_change, "next_loss": res.pruning.next_loss,
                  "random": res.random_control.model_dump()}
    out["load_after_job"] = _load()

    sub = _subset(L, H, PER_HEAD_SUBSET)
    per_head_loop(lm, ids, sub[0])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    loop = [per_head_loop(lm, ids, h) for h in sub]
    out["per_head_s"] = (time.perf_counter() - t0) / len(sub) * len(heads)
    out["per_head_cpu_s"] = (time.process_time() - c0) / len(sub) * len(heads)
    out["per_head_diff"] = max(abs(a - batched[heads.index(h)]) for a, h in zip(loop, sub))
    sub2 = _subset(L, H, PER_TEXT_SUBSET)
    t0, c0 = time.perf_counter(), time.process_time()
    loop2 = [per_text_loop(lm, ids, h) for h in sub2]
    out["per_text_s"] = (time.perf_counter() - t0) / len(sub2) * len(heads)
    out["per_text_cpu_s"] = (time.process_time() - c0) / len(sub2) * len(heads)
    out["per_text_diff"] = max(abs(a - batched[heads.index(h)]) for a, h in zip(loop2, sub2))
    out["subset"] = {"per_head": sub, "per_text": sub2}
    out["load_after"] = _load()
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip()
    except OSError:
        out["commit"] = "?"
    return out


def section(m: dict) -> str:
    j = m["job"]
    rows = [
        ("batched (Lantern)", "batched", m["batched_forwards"], "0 (reference)"),
        ("one forward per head (32 sentences padded)", "per_head", m["heads"], f"{m['per_head_diff']:.1e}"),
        ("one forward per head and sentence", "per_text", m["heads"] * m["sentences"], f"{m['per_text_diff']:.1e}"),
    ]
    lines = [
        "## Head redundancy and importance (`head_redundancy`, issue 15)\n",
        f"SmolLM2-135M, {m['sentences']} sentences ({m['tokens']} tokens), all {m['heads']} heads, "
        f"{m['threads']} torch thread; commit {m['commit']}. Machine load (1-min average): {m['load_before']} "
        f"before, {m['load_after_job']} after the job, {m['load_after']} at the end (the cores are shared).\n",
        f"**The whole job** (JS distances on the sentences and on random token sequences, gradient and exact "
        f"importance, pruning search): {m['job_cpu_s']:.0f} s of CPU time ({m['job_s']:.0f} s wall clock on the "
        f"shared cores), {j['forwards']} forwards (a backward counted as one), "
        f"{j['masked_rows']} masked rows. {j['clustered']} heads in {len(j['clusters'])} clusters at threshold "
        f"{THRESHOLD}; {j['pruned']} heads masked jointly at {TOLERANCE:.0%} tolerance (loss {j['loss_after']:.4f} vs "
        f"{j['base_loss']:.4f}, {j['relative_change']:+.2%}).\n",
        "**Exact masked-loss importance of every head** (the loss over the 32 sentences with one head masked, "
        "270 values); loops timed on a subset of heads and extrapolated per head; |Δ| is the largest difference "
        "from the batched losses on that subset:\n",
        "| method | CPU s | wall s | forwards | max abs Δ loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {m[k + '_cpu_s']:.1f} | {m[k + '_s']:.1f} | {f} | {d} |" for name, k, f, d in rows]
    lines.append(f"\nSpeed-up of the batched run in CPU time (wall clock): "
                 f"{m['per_head_cpu_s'] / m['batched_cpu_s']:.1f}× ({m['per_head_s'] / m['batched_s']:.1f}×) one "
                 f"forward per head, {m['per_text_cpu_s'] / m['batched_cpu_s']:.1f}× "
                 f"({m['per_text_s'] / m['batched_s']:.1f}×) one forward per (head, sentence). CPU time is the "
                 "figure to read on these shared cores: the wall clock counts the other processes' turns.\n")
    return "\n".join(lines)


def run() -> str:
    m = measure()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "head_redundancy.json").write_text(json.dumps(m, indent=1))
    return section(m)


if __name__ == "__main__":
    print(run())
