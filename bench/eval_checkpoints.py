"""Evaluate every checkpoint of the grammar model (bench/train_checkpoints.py) on held-out grammar
sentences: the language-modelling loss, subject–verb agreement accuracy, and the SAS score with the
`syntactic_attention` method; then plot them against the training step (docs/img/checkpoints_sas.png).

    python -m bench.eval_checkpoints [--models .lantern/checkpoints/grammar-llama/models.json]

Checkpoints are loaded through the worker's own `CheckpointCache` (with a budget of four
checkpoints, so the run also evicts) and `syntactic_attention` runs as the worker runs it (the method
with a `Context`), one direct call per checkpoint: what a sweep's children each compute.
Writes bench/results/checkpoints_sas.json and the PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from pydantic import TypeAdapter

from schemas.jobs import parse_job
from schemas.models import ModelSpec
from workers.context import Context
from workers.datasets.grammar import NOUNS, Grammar, Sentence, other_form
from workers.methods import syntactic_attention
from workers.models.checkpoints import CheckpointCache, module_bytes
from workers.models.loading import LM, load_model

HELD_OUT_SEED = 12345
RELATIONS = ("nsubj", "det", "obj", "acl:relcl", "nmod", "case", "amod", "punct")


def held_out(n: int) -> list[Sentence]:
    g = Grammar(seed=HELD_OUT_SEED)
    return [g.sentence() for _ in range(n)]


def has_attractor(s: Sentence) -> bool:
    """A noun of the other number between the subject's head noun and the main verb."""
    subject = _subject(s)
    form = 0 if s.subject_number == "sg" else 1
    return any(w == pair[1 - form] for w in s.words[subject + 1:s.verb] for pair in NOUNS)


@torch.no_grad()
def loss_and_agreement(lm: LM, sents: list[Sentence], batch: int = 64) -> dict:
    """Mean next-token loss over held-out sentences (every token after <s>), and the share of
    sentences where the main verb's correct form outscores its other-number form."""
    tok, total, count = lm.tokenizer, 0.0, 0
    for i in range(0, len(sents), batch):
        enc = tok([" ".join(s.words) for s in sents[i:i + batch]], padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        logits = lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), reduction="sum",
                                               ignore_index=-100)
        total += float(ce)
        count += int((labels[:, 1:] != -100).sum())
    right = {True: [], False: []}
    for s in sents:
        ids = tok(" ".join(s.words[:s.verb]))["input_ids"]
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
        good, bad = tok.convert_tokens_to_ids([s.words[s.verb], other_form(s.words[s.verb])])
        right[has_attractor(s)].append(bool(logits[good] > logits[bad]))
    every = right[True] + right[False]
    return {"loss": total / count, "agreement": sum(every) / len(every),
            "agreement_attractor": sum(right[True]) / max(1, len(right[True])), "n_attractor": len(right[True])}


@torch.no_grad()
def subject_retrieval(lm: LM, sents: list[Sentence]) -> dict:
    """Ours, not Clark et al.'s or Chen et al.'s: in a causal LM the main verb's number is decided at the
    position *before* the verb (the verb is predicted there). Per head, the share of sentences whose
    subject is separated from the verb (a PP or relative clause between them) in which that position
    attends most (over the words before it, itself excluded) to the subject's head noun. With the
    word-level tokenizer, token t is word t-1 (<s> first)."""
    from workers.internals.capture import attention_parts

    picked = [s for s in sents if s.verb - 1 != _subject(s)]
    hits: dict[int, torch.Tensor] = {}
    subject = 0

    def on_layer(layer: int, alpha: torch.Tensor, _v) -> None:
        row = alpha[:, -1, 1:-1].float()  # (H, verb - 1): from the last word to the earlier words
        hit = (row.argmax(-1) + 1 == subject).long()  # (H,)
        hits[layer] = hits.get(layer, torch.zeros_like(hit)) + hit

    with attention_parts(lm, list(range(len(lm.layers))), on_layer, with_values=False):
        for s in picked:
            ids = lm.tokenizer(" ".join(s.words[:s.verb]))["input_ids"]  # (verb + 1,) <s> + words before the verb
            subject = _subject(s) + 1  # token index
            lm.model(input_ids=torch.tensor([ids]), use_cache=False)
    grid = torch.stack([hits[i] for i in sorted(hits)]).double() / len(picked)  # (L, H)
    layer, head = divmod(int(grid.argmax()), grid.shape[1])
    return {"subject_retrieval": float(grid.max()), "subject_retrieval_head": [layer, head],
            "subject_retrieval_n": len(picked)}


def _subject(s: Sentence) -> int:
    return next(i for i, (h, r) in enumerate(zip(s.heads, s.relations)) if h == s.verb + 1 and r == "nsubj")


def evaluate(models_file: Path, n_loss: int = 400, n_sas: int = 100, log=print) -> dict:
    torch.set_num_threads(1)
    (spec,) = TypeAdapter(list[ModelSpec]).validate_json(models_file.read_text())
    base = load_model(spec)
    cache = CheckpointCache(budget_bytes=4 * module_bytes(base.model))
    sents = held_out(max(n_loss, n_sas))
    job = parse_job({"kind": "syntactic_attention", "model": spec.id,
                     "input": {"sentences": [s.dict() for s in sents[:n_sas]]}, "params": {"top_k": 3}})
    rows = []
    for ckpt in spec.checkpoints or ():
        t0 = time.perf_counter()
        lm = cache.get(base, ckpt.step)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = syntactic_attention.run(lm, job, Context())
        sas_s = time.perf_counter() - t1
        row = {"step": ckpt.step, **loss_and_agreement(lm, sents[:n_loss]), **subject_retrieval(lm, sents[:n_loss]),
               "sas": res.sas, "sas_job_loss": res.loss,
               "best": res.best.model_dump(), "baseline": res.baseline.model_dump(),
               "uas_by_direction": res.uas_by_direction, "load_s": round(load_s, 4), "sas_s": round(sas_s, 3),
               "relations": {r.relation: {"count": r.count, "top": r.top[0].model_dump(), "baseline": r.baseline.score}
                             for r in res.relations if r.relation in RELATIONS}}
        rows.append(row)
        if log:
            log(f"step {ckpt.step:6d}  loss {row['loss']:.3f}  agreement {row['agreement']:.2f} "
                f"(attractor {row['agreement_attractor']:.2f})  SAS {row['sas']:.3f} "
                f"L{res.best.layer}H{res.best.head}/{res.best.direction}  subject retrieval "
                f"{row['subject_retrieval']:.2f} L{row['subject_retrieval_head'][0]}H{row['subject_retrieval_head'][1]}  nsubj "
                f"{row['relations'].get('nsubj', {}).get('top', {}).get('score', float('nan')):.2f}")
    return {"model": spec.id, "revision": spec.revision, "n_loss_sentences": n_loss, "n_sas_sentences": n_sas,
            "cache": {"budget_bytes": cache.budget_bytes, "loads": cache.loads,
                      "load_seconds": round(cache.load_seconds, 3)}, "checkpoints": rows}


def largest_jump(steps: list[int], values: list[float]) -> tuple[int, int, float]:
    """(from step, to step, change) of the largest absolute change between consecutive checkpoints."""
    k = max(range(len(values) - 1), key=lambda i: abs(values[i + 1] - values[i]))
    return steps[k], steps[k + 1], values[k + 1] - values[k]


def plot(result: dict, train_log: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["checkpoints"]
    steps = [max(r["step"], 0.5) for r in rows]  # step 0 drawn at 0.5 on the log axis
    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(7.5, 9), sharex=True)
    top.plot(steps, [r["sas"] for r in rows], "o-", color="black", label="SAS (best head's UAS, all words)")
    top.plot(steps, [r["baseline"]["score"] for r in rows], color="black", lw=0.8, ls=":",
             label="its best fixed-offset baseline")
    for rel, color in (("det", "tab:blue"), ("obj", "tab:green"), ("nsubj", "tab:red")):
        vals = [r["relations"].get(rel, {}).get("top", {}).get("score", float("nan")) for r in rows]
        base = [r["relations"].get(rel, {}).get("baseline", float("nan")) for r in rows]
        top.plot(steps, vals, "s-", color=color, ms=4, label=f"{rel}: best head's accuracy")
        top.plot(steps, base, color=color, lw=0.8, ls=":")
    top.set_ylabel("attachment score")
    top.set_ylim(0, 1.02)
    top.legend(fontsize=7, loc="upper left")
    mid.plot(steps, [r["agreement_attractor"] for r in rows], "^-", color="tab:purple",
             label="agreement accuracy (subject and verb separated by an attractor)")
    mid.plot(steps, [r["subject_retrieval"] for r in rows], "d-", color="tab:orange",
             label="pre-verb position attends most to the subject (best head; ours)")
    mid.axhline(0.5, color="grey", lw=0.8, ls=":")
    mid.set_ylabel("share of sentences")
    mid.set_ylim(0, 1.02)
    mid.legend(fontsize=7, loc="upper left")
    if train_log:
        loss = train_log["loss"]
        w = 20
        smooth = [sum(loss[max(0, i - w):i + 1]) / len(loss[max(0, i - w):i + 1]) for i in range(len(loss))]
        bottom.plot(range(1, len(loss) + 1), smooth, color="tab:orange", lw=1, label="training loss (20-step mean)")
    bottom.plot(steps, [r["loss"] for r in rows], "o-", color="tab:red", label="held-out loss")
    bottom.set_ylabel("loss (nats/token)")
    bottom.set_xscale("log")
    bottom.set_xlabel("training step (log; step 0 at 0.5)")
    bottom.legend(fontsize=7)
    fig.suptitle(f"{result['model']}: syntactic attention, agreement and loss across training (dotted: baselines)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=Path(".lantern/checkpoints/grammar-llama/models.json"))
    p.add_argument("--out", type=Path, default=Path("bench/results/checkpoints_sas.json"))
    p.add_argument("--png", type=Path, default=Path("docs/img/checkpoints_sas.png"))
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out")
    a = p.parse_args(argv)
    train_log_path = a.models.parent / "train_log.json"
    train_log = json.loads(train_log_path.read_text()) if train_log_path.exists() else None
    if a.plot_only:
        plot(json.loads(a.out.read_text()), train_log, a.png)
        return
    result = evaluate(a.models)
    if train_log:
        result["training"] = {k: v for k, v in train_log.items() if k != "loss"}
    steps = [r["step"] for r in result["checkpoints"]]
    for key in ("sas", "loss", "agreement_attractor", "subject_retrieval"):
        a_, b_, d = largest_jump(steps, [r[key] for r in result["checkpoints"]])
        result.setdefault("largest_jumps", {})[key] = {"from": a_, "to": b_, "change": round(d, 4)}
    a.out.write_text(json.dumps(result, indent=1))
    plot(result, train_log, a.png)
    print(json.dumps(result["largest_jumps"]), f"-> {a.out}, {a.png}")


if __name__ == "__main__":
    main()
