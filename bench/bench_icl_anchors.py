"""icl_anchors on SmolLM2-135M with the sentiment task of tests/data/sentiment.json: the three flows per
layer, the deep-layer AUC and R_l, and anchor re-weighting before/after, for 1, 4 and 12 demonstrations
per class (the paper's runs use 1). Figures for docs/icl_anchors.md; writes bench/results/icl_anchors.json.

    .venv/bin/python -m bench.bench_icl_anchors [--shots 1 4 12] [--flow-queries 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "sentiment.json"


class MemoryStore:
    """The artifact store's `put`, in memory (the job stores β; the benchmark needs no Redis)."""

    def __init__(self):
        self.items = {}

    def put(self, kind, model, data):
        view = SimpleNamespace(id="an_" + uuid.uuid4().hex, kind=kind, model=model, data=data)
        self.items[view.id] = view
        return view


def demonstrations(data: dict, per_class: int) -> list[dict]:
    """`per_class` of each label, alternating (positive, negative, ...), in pool order."""
    by = {k: [d for d in data["demonstrations"] if d["label"] == k] for k in data["label_words"]}
    out = []
    for i in range(per_class):
        out += [by[k][i] for k in data["label_words"]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 4, 12])
    ap.add_argument("--flow-queries", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "icl_anchors.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench.common import load_smollm2
    from schemas.jobs import parse_job
    from workers.context import Context
    from workers.methods import icl_anchors

    lm = load_smollm2()
    data = json.loads(DATA.read_text())
    runs = []
    for shots in args.shots:
        inp = {"label_words": data["label_words"], "template": data["template"],
               "demonstrations": demonstrations(data, shots), "queries": data["queries"],
               "fit_examples": data["fit_examples"]}
        job = parse_job({"kind": "icl_anchors", "model": lm.id, "input": inp,
                         "params": {"flow_queries": args.flow_queries}})
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = icl_anchors.run(lm, job, Context(store=MemoryStore()))
        seconds = time.perf_counter() - t0
        out = res.model_dump(mode="json", exclude={"provenance", "tokens", "predictions"})
        out["reweighting"].pop("predictions_after", None)
        out["reweighting"].pop("beta", None)
        out.update(shots_per_class=shots, prompt_tokens=len(res.tokens), seconds=round(seconds, 1),
                   load_before=round(load, 2), load_after=round(os.getloadavg()[0], 2), device=str(lm.device),
                   threads=args.threads)
        runs.append(out)
        f, a, r = res.flows, res.auc, res.reweighting
        print(f"\n== {shots} demonstration(s) per class: {len(res.tokens)} prompt tokens, {seconds:.0f} s, "
              f"load {load:.1f}")
        print("layer   S_wp      S_pq      S_ww      AUC     R")
        for l in range(res.n_layers):
            auc = f"{a.auc[l]:.3f}  {a.r[l]:.3f}" if a is not None and a.r is not None else "-"
            print(f"{l:5d}  {f.s_wp[l]:.2e}  {f.s_pq[l]:.2e}  {f.s_ww[l]:.2e}  {auc}")
        print(f"accuracy {res.accuracy:.3f}; re-weighting: {r.accuracy_before:.3f} -> {r.accuracy_after:.3f} "
              f"(loss {r.loss_before:.3f} -> {r.loss_after:.3f}); with the fit examples as demonstrations "
              f"{r.accuracy_more_demos}; answers {a.counts if a else None}; warnings {[w.type for w in res.warnings]}",
              flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(runs, indent=1))  # after every run


if __name__ == "__main__":
    main()
