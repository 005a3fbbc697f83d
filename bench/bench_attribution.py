"""Integrated gradients (50 steps) on SmolLM2 against Captum's LayerIntegratedGradients and Inseq's
integrated_gradients, same model, prompt, target, baseline and steps, in one process; plus the
service's own overhead (submit -> finished for a trivial job over real HTTP)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from bench.common import fmt_s, load_smollm2, prompt_of_tokens, service_overhead, timed

TARGET = " Mary"
LENGTHS = (16, 64, 256)
STEPS = 50


def _lantern(lm, prompt):
    from schemas.jobs import parse_job
    from workers.context import Context
    from workers.methods import attribution

    req = parse_job({"kind": "attribution", "model": lm.id, "input": {"prompt": prompt, "target": TARGET},
                     "params": {"n_steps": STEPS, "fix_special_tokens": False, "fix_first_token": False}})
    return lambda: attribution.run(lm, req, Context())


@contextmanager
def as_loaded(lm):
    """The model as transformers loads it (parameters require grad), as peers' users run them;
    Lantern freezes parameters at load, which is part of what is measured."""
    lm.model.requires_grad_(True)
    try:
        yield
    finally:
        lm.model.requires_grad_(False)


def _captum(lm, prompt, batch):
    from captum.attr import LayerIntegratedGradients

    ids = torch.tensor([lm.encode(prompt).ids])
    target = lm.tokenizer(TARGET, add_special_tokens=False)["input_ids"][0]

    def logprob(input_ids):
        return torch.log_softmax(lm.model(input_ids=input_ids).logits[:, -1].float(), -1)[:, target]

    lig = LayerIntegratedGradients(logprob, lm.embed)
    base = torch.full_like(ids, lm.tokenizer.pad_token_id)
    return lambda: lig.attribute(ids, base, n_steps=STEPS, internal_batch_size=batch)


def _inseq(lm, prompt, batch):
    import inseq

    model = inseq.load_model(lm.model, "integrated_gradients", tokenizer=lm.tokenizer)
    return lambda: model.attribute(prompt, prompt + TARGET, n_steps=STEPS, internal_batch_size=batch,
                                   show_progress=False)


def run() -> str:
    from workers.internals.batching import rows_per_batch

    lm = load_smollm2()
    rows = ["| prompt tokens | Lantern IG | Captum LayerIG | Inseq IG | vs faster peer | Captum, params frozen by hand |",
            "|---|---|---|---|---|---|"]
    for n in LENGTHS:
        prompt = prompt_of_tokens(lm, n)
        batch = min(STEPS, rows_per_batch(lm, n))
        repeats = 3 if n <= 64 else 1
        ours = timed(_lantern(lm, prompt), repeats)
        frozen = timed(_captum(lm, prompt, batch), repeats)
        with as_loaded(lm):
            captum = timed(_captum(lm, prompt, batch), repeats)
            try:
                inseq = timed(_inseq(lm, prompt, batch), repeats)
            except Exception as e:  # report, never hide
                inseq = None
                print("inseq failed:", type(e).__name__, e)
        peer = min(t for t in (captum, inseq) if t is not None)
        rows.append(f"| {n} | {fmt_s(ours)} | {fmt_s(captum)} | {fmt_s(inseq) if inseq else 'failed'} | "
                    f"**{peer / ours:.2f}×** | {fmt_s(frozen)} ({frozen / ours:.2f}×) |")
        print(rows[-1], flush=True)
    overhead = service_overhead(200)
    return "\n".join([
        "## Attribution: integrated gradients (issue #2)",
        "",
        f"IG with {STEPS} Gauss-Legendre steps, `pad` baseline, one target token (`{TARGET}`), SmolLM2-135M fp32, "
        "batch of path points sized the same for all three (`internal_batch_size`). Median wall time (one warm-up; "
        "3 runs at 16 and 64 tokens, 1 at 256). Peers get the model as transformers loads it (parameters "
        "require grad), as their documentation runs them; the last column gives Captum the model with "
        "parameters frozen by hand, which isolates the remaining gain (logits at the target only).",
        "",
        *rows,
        "",
        "The 1.5× target is not met at one target token and equal steps: all three take input gradients "
        "only (`torch.autograd.grad` skips parameter gradients whether or not parameters require grad, so "
        "freezing them gains nothing), and the forward and backward through 30 layers dominate on 2 CPU "
        "cores. What is left to Lantern is computing logits at the target position only (the 49k-row "
        "unembedding at every position is ~12% of a forward). The structural gains are elsewhere and not "
        "in this table: a multi-token target costs one forward per batch plus one backward per target "
        "token, where Captum's LLMAttribution re-runs the whole integral per target token; `n_steps: auto` "
        "stops when completeness is met; on a GPU, bf16 and memory-sized batches (`bench/gpu_check.py`, to run when a GPU is lent).",
        "",
        "### Service overhead (submit → finished over HTTP, real Redis and worker)",
        "",
        f"{overhead['n']} sequential `generate` jobs of one token on a 3-token prompt. "
        "`queue+dispatch` = finished_at − created_at − the method's own elapsed time (server clocks); "
        "`round trip` = client-side submit to first poll that sees `finished` (polling every 2 ms).",
        "",
        "| measure | p50 | p99 |",
        "|---|---|---|",
        f"| queue+dispatch overhead | {overhead['overhead_p50'] * 1e3:.1f} ms | {overhead['overhead_p99'] * 1e3:.1f} ms |",
        f"| method (one forward) | {overhead['method_p50'] * 1e3:.1f} ms | {overhead['method_p99'] * 1e3:.1f} ms |",
        f"| round trip (client) | {overhead['rtt_p50'] * 1e3:.1f} ms | {overhead['rtt_p99'] * 1e3:.1f} ms |",
    ])
