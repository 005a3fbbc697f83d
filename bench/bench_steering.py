"""ITI on SmolLM2-135M: steered generation overhead, `steering_fit` time, and the truthfulness figures.

- overhead: greedy `generate` tokens/s with the 13-head steering profile (α = 15) against
  unsteered, same prompt, same process, runs interleaved (target ≤ 5%);
- `steering_fit` wall time for 200 examples (the 70-question true/false set, both answers, plus
  the same questions with a "Question:/Answer:" prompt until 200);
- truthfulness (docs/steering.md): fit on 50 questions, on 20 held-out questions the best head's
  probe accuracy and the mean log-probability margin of the true over the false answer at α = 0
  and α > 0.

`python -m bench.run steering` writes the section; `python -m bench.bench_steering figures` prints
the truthfulness table only.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "true_false_qa.json"
PROMPT = "Q: {question}\nA:"


def items() -> list[dict]:
    return json.loads(DATA.read_text())["items"]


def split(all_items: list[dict], n_test: int = 20, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Held-out questions, stratified by topic, seeded."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(all_items))
    test = set(order[:n_test].tolist())
    return [it for i, it in enumerate(all_items) if i not in test], [it for i, it in enumerate(all_items) if i in test]


def examples(train: list[dict], prompt: str = PROMPT) -> list[dict]:
    """Both answers of each question, labelled, grouped by question (folds never split one)."""
    out = []
    for i, it in enumerate(train):
        for key, label in (("true", True), ("false", False)):
            out.append({"prompt": prompt.format(**it), "completion": " " + it[key], "label": label,
                        "group": f"{prompt[:4]}{i}"})
    return out


@torch.no_grad()
def margins(lm, test: list[dict]) -> np.ndarray:
    """log p(true answer | prompt) − log p(false answer | prompt), summed over answer tokens, (items,)."""
    from workers.internals.inputs import encode_continuation
    from workers.internals.scoring import Target, TargetScorer

    out = []
    for it in test:
        prompt = lm.encode(PROMPT.format(**it))
        lp = []
        for key in ("true", "false"):
            target = Target(prompt, encode_continuation(lm, " " + it[key]), generated=False)
            _, logprob = TargetScorer(lm, target)(input_ids=torch.tensor([target.seq_ids], device=lm.device))
            lp.append(float(logprob.sum()))
        out.append(lp[0] - lp[1])
    return np.array(out)


def fit(lm, store, exs: list[dict], **params):
    from schemas.jobs import parse_job
    from workers.context import Context
    from workers.methods import steering_fit

    req = parse_job({"kind": "steering_fit", "model": lm.id, "input": {"examples": exs}, "params": params})
    return steering_fit.run(lm, req, Context(store=store))


def steered_margins(lm, store, profile_id: str, alpha: float, test: list[dict]) -> np.ndarray:
    from schemas.kinds.steering_fit import SteeringRef
    from workers.interventions.steering import apply

    with apply(lm, SteeringRef(profile_id=profile_id, alpha=alpha), store):
        return margins(lm, test)


def random_profile(lm, store, profile_id: str, seed: int) -> str:
    """The same heads and σ with random unit directions: a control for 'any push changes the margin'."""
    data = dict(store.get("steering-profiles", profile_id, lm.id).data)
    rng = np.random.default_rng(seed)
    heads = []
    for h in data["heads"]:
        d = rng.normal(size=len(h["direction"]))
        heads.append({**h, "direction": (d / np.linalg.norm(d)).tolist()})
    return store.put("steering-profiles", lm.id, {**data, "heads": heads}).id


def truthfulness(lm, store, alphas=(0.0, 2.0, 5.0, 10.0, 15.0)) -> tuple[object, dict[float, np.ndarray]]:
    train, test = split(items())
    res = fit(lm, store, examples(train), seed=0)
    by_alpha = {a: steered_margins(lm, store, res.profile_id, a, test) for a in alphas}
    for seed in range(3):  # random directions, same heads and σ, α = 5
        by_alpha[f"random θ #{seed + 1}, α = 5"] = steered_margins(lm, store, random_profile(lm, store, res.profile_id, seed),
                                                                   5.0, test)
    return res, by_alpha


def truthfulness_table(res, by_alpha: dict[float, np.ndarray]) -> str:
    best = max(res.heads, key=lambda h: h.accuracy)
    base = by_alpha[0.0]
    lines = [f"Fit on 50 questions (100 examples, 5-fold by question): best head {best.layer}.{best.head}, "
             f"validation accuracy {best.accuracy:.3f} (chance {res.chance:.2f}); {len(res.heads)} heads steered "
             f"(mass-mean directions).\n",
             "| α | mean margin (held-out 20) | Δ vs α = 0 | items with margin > 0 | items whose margin rose |",
             "| --- | --- | --- | --- | --- |"]
    for a, m in by_alpha.items():
        name = f"{a:g}" if isinstance(a, float) else a
        lines.append(f"| {name} | {m.mean():+.3f} | {m.mean() - base.mean():+.3f} | {int((m > 0).sum())}/{len(m)} "
                     f"| {int((m > base).sum()) if a else '–'}/{len(m)} |")
    return "\n".join(lines)


def _tokens_per_s(lm, store, profile_id: str, n_new: int = 48, repeats: int = 7) -> tuple[float, float]:
    """Median greedy tokens/s unsteered and steered (α = 15), runs interleaved so drift hits both."""
    from schemas.jobs import parse_job
    from workers.context import Context
    from workers.methods import generate

    def request(steering):
        params = {"max_new_tokens": n_new, "stop_at_eos": False, **({"steering": steering} if steering else {})}
        return parse_job({"kind": "generate", "model": lm.id,
                          "input": {"prompt": "Q: What is the capital of France?\nA:"}, "params": params})

    plain, steered = request(None), request({"profile_id": profile_id, "alpha": 15})
    times: dict[str, list[float]] = {"plain": [], "steered": []}
    for r in range(repeats + 1):
        for name, req in (("plain", plain), ("steered", steered)):
            t0 = time.perf_counter()
            generate.run(lm, req, Context(store=store))
            if r:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    return n_new / statistics.median(times["plain"]), n_new / statistics.median(times["steered"])


def _store():
    from redis import Redis

    from common.artifacts import ArtifactStore

    return ArtifactStore(Redis.from_url("redis://127.0.0.1:6379/14"), owner="bench")


def _smollm2():
    from common.registry import load_registry
    from workers.models.loading import load_model

    return load_model(load_registry()["smollm2-135m"])


def run() -> str:
    lm, store = _smollm2(), _store()
    all_items = items()
    exs = examples(all_items) + examples(all_items, "Question: {question}\nAnswer:")
    exs = exs[:200]
    t0 = time.perf_counter()
    fitted = fit(lm, store, exs, seed=0)
    fit_s = time.perf_counter() - t0
    unsteered, steered = _tokens_per_s(lm, store, fitted.profile_id)
    res, by_alpha = truthfulness(lm, store)
    return "\n".join([
        "## ITI steering (SmolLM2-135M)\n",
        f"`steering_fit` on 200 examples (270 heads probed, 5-fold, {len(fitted.heads)} heads kept): "
        f"**{fit_s:.1f} s** end to end (activation collection + 1350 logistic regressions).\n",
        "| greedy generate, 48 new tokens (median of 7, interleaved) | tokens/s |", "| --- | --- |",
        f"| unsteered | {unsteered:.1f} |",
        f"| steered, {len(fitted.heads)} heads, α = 15 | {steered:.1f} |",
        f"| overhead | {100 * (unsteered / steered - 1):+.1f}% (target ≤ 5%) |\n",
        "The steering hook is one pre-hook per steered layer adding a precomputed vector, so the cost "
        "is a few vector adds per token; the figure is limited by timing noise on a shared CPU.\n",
        gpu_section(),
        "### Truthfulness figures (docs/steering.md)\n",
        truthfulness_table(res, by_alpha),
    ])


def gpu_section() -> str:
    """The last CUDA check (`python -m bench.steering_gpu_check OUT` on a lent GPU, JSON kept in results/)."""
    path = Path(__file__).resolve().parent / "results" / "steering_gpu.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    lines = [f"### On a GPU ({r['device']}, torch {r['torch']}; SmolLM2-shaped LLaMA, random weights)\n",
             "| dtype | greedy tok/s unsteered | steered (13 heads in 5 layers, α = 15) | overhead "
             "| α = 0 max logit diff | collect 200 examples | 1,350 probes (batched Newton, CPU) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for dtype in ("bfloat16", "float32"):
        d = r[dtype]
        lines.append(f"| {dtype} | {d['tokens_per_s_plain']} | {d['tokens_per_s_steered']} | {d['overhead_pct']:+.1f}% "
                     f"| {d['alpha0_max_abs_logit_diff']:g} | {d['collect_200_s']} s | {d['probe_solve_1350_s']} s |")
    lines.append("\nDecoding is one token per forward in eager mode (launch-bound at this size), so each "
                 "steered layer's extra add shows; bf16's first collection includes CUDA warm-up.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["figures"]:
        print(truthfulness_table(*truthfulness(_smollm2(), _store())))
    else:
        print(run())
