"""Knowledge neurons: Lantern's `knowledge_neurons` kind against the published `knowledge-neurons`
package (PyPI knowledge-neurons 0.0.2, EleutherAI; installed --no-deps by the Makefile's peers
target), whole: the 5 facts of bench/bench_knowledge.py, 3 paraphrases each, all 30 layers, 20 IG
steps, on SmolLM2-135M fp32.

The package addresses a model by attribute paths (`transformer_layers_attr`, `input_ff_attr`, ...)
set for BERT, GPT-2 and GPT-Neo; a user points them at another architecture's modules. SmolLM2 is a
LLaMA with a gated MLP: down_proj(act(gate_proj(x)) · up_proj(x)); a knowledge neuron's activation
is h = act(gate) · up, the input of down_proj, which no module outputs. The package scales the
*output* of `input_ff_attr` at the last position along its IG path; pointed at `mlp.act_fn` it scales
act(gate) by α, which scales h by α (the product is linear in each factor), and its score
act(gate) · ∂p/∂act(gate) = act(gate) · up · ∂p/∂h = h · ∂p/∂h: the same path and the same score as
on h. So the package, with `model.layers` / `mlp.act_fn` / `mlp.down_proj.weight` /
`model.embed_tokens.weight`, computes the paper's attribution for this model; checked, not assumed:
the scores of every neuron of the first fact's prompts are compared with Lantern's
(`workers.internals.ffn.fact_attributions`) before anything is timed.

Both sides get the same settings: threshold 0.2 × the prompt's max score (the package's
`coarse_adaptive_threshold`), kept when coarse on at least 2 of the 3 prompts (package `p=0.5`:
count > 1.5; Lantern `sharing_ratio=0.6`: share ≥ 0.6), no control prompts (Lantern:
`filter_controls: false`, `builtin_controls: false`). The package's IG is a uniform-weight sum over
linspace(0, 1, 20) (both endpoints, weight 1/20), which no Captum rule is; Lantern runs its closest
rule, `riemann_trapezoid` (the same 20 points, half weight at the ends): the scores differ by that
quadrature, not by the model. `python -m bench.run knowledge_peers`.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time

import torch

from bench.bench_knowledge import FACTS
from bench.kinds import run_kind

STEPS = 20
BATCH = 10  # the package's default batch of path points (steps must be a multiple)
THRESHOLD = 0.2
PKG_P = 0.5
LANTERN_PARAMS = {"n_steps": STEPS, "rule": "riemann_trapezoid", "threshold": THRESHOLD, "sharing_ratio": 0.6,
                  "max_neurons": 256, "filter_controls": False, "builtin_controls": False, "random_baseline": False}
# the package's attribute paths for a LLaMA (HF LlamaForCausalLM): see the module docstring
LLAMA_PATHS = {"transformer_layers_attr": "model.layers", "input_ff_attr": "mlp.act_fn",
               "output_ff_attr": "mlp.down_proj.weight", "word_embeddings_attr": "model.embed_tokens.weight"}


def load():
    from bench.bench_knowledge import load as load_fp32

    return load_fp32()


def package(lm):
    """knowledge_neurons.KnowledgeNeurons around a copy of lm's HF model (its patches replace modules
    of the model it is given), pointed at the LLaMA modules."""
    from knowledge_neurons import KnowledgeNeurons

    kn = KnowledgeNeurons(copy.deepcopy(lm.model), lm.tokenizer, model_type="gpt", device=str(lm.device))
    for attr, path in LLAMA_PATHS.items():
        setattr(kn, attr, path)
    return kn


def package_scores(kn, prompt: str, answer: str) -> torch.Tensor:
    """(n_layers, inter) scores of one prompt, all layers, as `get_coarse_neurons` computes them."""
    return kn.get_scores(prompt, answer, batch_size=BATCH, steps=STEPS, pbar=False).detach().float().cpu()


def package_locate(kn, prompts: list[str], answer: str) -> set[tuple[int, int]]:
    refined = kn.get_refined_neurons(prompts, answer, p=PKG_P, batch_size=BATCH, steps=STEPS,
                                     coarse_adaptive_threshold=THRESHOLD, quiet=True)
    return {tuple(n) for n in refined}


def lantern_scores(lm, prompt: str, answer: str) -> torch.Tensor:
    from workers.internals.ffn import fact_attributions
    from workers.knowledge.neurons import encode_answer

    return fact_attributions(lm, lm.encode(prompt).ids, encode_answer(lm, answer), STEPS, "riemann_trapezoid").float()


def lantern_locate(lm, prompts: list[str], answer: str) -> set[tuple[int, int]]:
    res = run_kind(lm, "knowledge_neurons", {"prompts": prompts, "answer": answer}, LANTERN_PARAMS)
    return {(n.layer, n.index) for n in res.neurons}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))


def score_check(lm, kn) -> list[dict]:
    """Per prompt of the first fact: r, the largest |Δ| relative to the max score, and whether the
    coarse sets (score > 0.2 × max) agree."""
    answer, prompts = FACTS[0]
    out = []
    for prompt in prompts:
        ours, theirs = lantern_scores(lm, prompt, answer), package_scores(kn, prompt, answer)
        coarse = lambda s: set(map(tuple, (s > THRESHOLD * s.max()).nonzero().tolist()))  # noqa: E731
        a, b = coarse(ours), coarse(theirs)
        out.append({"prompt": prompt, "r": pearson(ours, theirs),
                    "max_rel": float((ours - theirs).abs().max() / theirs.abs().max()),
                    "coarse_lantern": len(a), "coarse_package": len(b), "coarse_common": len(a & b)})
        print(out[-1], flush=True)
    return out


def load_avg() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def collect(check: list[dict] | None = None, facts=FACTS, on_row=None) -> dict:
    """`check`: the score check's rows when already computed on this commit (else computed here);
    `on_row(data so far)` after each fact (a long run keeps what it measured)."""
    torch.set_num_threads(1)
    lm = load()
    kn = package(lm)
    before = load_avg()
    check = check or score_check(lm, kn)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the same warm-up for both: one untimed locate of the first fact's first prompt
    answer, prompts = FACTS[0]
    lantern_locate(lm, prompts[:1], answer)
    package_locate(kn, prompts[:1], answer)
    rows: list[dict] = []
    data = {"check": check, "rows": rows, "load_before": before, "commit": commit}
    for answer, prompts in facts:  # interleaved, one timed run each per fact
        t0 = time.perf_counter()
        ours = lantern_locate(lm, prompts, answer)
        t1 = time.perf_counter()
        theirs = package_locate(kn, prompts, answer)
        t2 = time.perf_counter()
        rows.append({"fact": f"{prompts[0]} →{answer}", "lantern_s": t1 - t0, "package_s": t2 - t1,
                     "lantern": sorted(ours), "package": sorted(theirs), "common": len(ours & theirs)})
        print(rows[-1], flush=True)
        data["load_after"] = load_avg()
        if on_row:
            on_row(data)
    return data


def _neurons(ns: list) -> str:
    """The count and the layers they sit in."""
    return f"{len(ns)} ({', '.join(map(str, sorted({a for a, _ in ns})))})" if ns else "0"


def section(data: dict) -> str:
    rows = data["rows"]
    lt, pt = sum(r["lantern_s"] for r in rows), sum(r["package_s"] for r in rows)
    lines = ["## Knowledge neurons: Lantern vs the `knowledge-neurons` package (SmolLM2-135M, fp32, CPU, 1 thread)", "",
             f"Locating the knowledge neurons of {len(rows)} of the {len(FACTS)} facts of bench_knowledge (3 paraphrases each, all 30 layers × 1,536 neurons, 20 IG "
             "steps, threshold 0.2 × the prompt's max, kept when coarse on at least 2 of 3 prompts, no control "
             "prompts). Package: knowledge-neurons 0.0.2 (EleutherAI, PyPI) `KnowledgeNeurons.get_refined_neurons"
             "(prompts, answer, p=0.5, steps=20, batch_size=10, coarse_adaptive_threshold=0.2)` on a copy of the "
             "same HF model, its attribute paths pointed at the LLaMA modules (`model.layers`, `mlp.act_fn`, "
             "`mlp.down_proj.weight`, `model.embed_tokens.weight`): it scales act(gate) along the path, which "
             "scales the neuron activation act(gate)·up by the same α and gives the same score h·∂p/∂h "
             "(bench/bench_knowledge_peers.py says why). Lantern: the `knowledge_neurons` kind (`sharing_ratio` "
             "0.6, `filter_controls` and `builtin_controls` off, `random_baseline` off, `rule` "
             "`riemann_trapezoid`); its time includes the suppression/enhancement read-outs the package's "
             "locate does not do. One timed run of each per fact, interleaved, after the same warm-up (one "
             "untimed locate of the first prompt on each side). Code: bench/bench_knowledge_peers.py.", "",
             "| fact | Lantern s | package s | Lantern × | neurons Lantern (layers) | neurons package (layers) | common |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fact']} | {r['lantern_s']:.1f} | {r['package_s']:.1f} | "
                     f"**{r['package_s'] / r['lantern_s']:.1f}×** | {_neurons(r['lantern'])} | "
                     f"{_neurons(r['package'])} | {r['common']} |")
    lines.append(f"| **{len(rows)} facts** | **{lt:.1f}** | **{pt:.1f}** | **{pt / lt:.1f}×** | "
                 f"{sum(len(r['lantern']) for r in rows)} | {sum(len(r['package']) for r in rows)} | "
                 f"{sum(r['common'] for r in rows)} |")
    lines += ["", "Agreement of the scores, checked before timing, on the first fact's prompts (every neuron of every "
              "layer; the package's uniform-weight sum against Lantern's trapezoid on the same 20 points):", ""]
    for c in data["check"]:
        lines.append(f"- \"{c['prompt']}\": Pearson r {c['r']:.5f}, largest |Δ| {c['max_rel']:.1%} of the max "
                     f"score; coarse neurons (> 0.2 × max) Lantern {c['coarse_lantern']}, package "
                     f"{c['coarse_package']}, common {c['coarse_common']}.")
    lines += ["", f"Commit {data['commit']}. Load average (1, 5, 15 min) before: {data['load_before']}; after: "
              f"{data['load_after']}, on {os.cpu_count()} cores (other benchmarks may share them). What limits the comparison: the package supports BERT, GPT-2 "
              "and GPT-Neo by name; on SmolLM2 it runs through attribute paths a user sets (above), and its "
              "`model_type=\"gpt\"` path handles the single-token answers here (its multi-token loop appends "
              "the greedy token, not the answer's); its quadrature (uniform weights on both endpoints) differs "
              "from every rule Lantern offers, so the neuron sets can differ at the threshold's edge. The "
              "package runs one layer at a time: per layer and prompt one baseline forward, then forward + "
              "backward of 2 batches of 10 copies of the whole prompt; Lantern scores every layer in one "
              "batched pass over single-token rows that share the prompt's KV cache. One run per fact: "
              "absolute times are noisy on shared cores, the per-fact ratios less so.", ""]
    return "\n".join(lines)


def run() -> str:
    return section(collect())


if __name__ == "__main__":
    print(run())
