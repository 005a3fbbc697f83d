"""Perturbation attribution on a GPU (run on a lent one): Lantern vs Captum, same model, same inputs.

The model is SmolLM2-shaped (LLaMA, 30 layers, 9 query / 3 KV heads, vocabulary 49,152) with random
weights, since the GGUF file is too large to carry; the tokenizer is SmolLM2's own (saved from the
bundled model into `.gpu/smollm2-tok`), so prompts have the same token counts as on the CPU. Time
depends on shapes, not on weight values. Methods and sample counts as `bench/bench_perturbation.py`.

Captum 0.9 runs `LLMAttribution` in both modes: `forward_in_tokens=False` (one forward per
perturbation, its fastest) and its default (the target decoded token by token with a KV cache: T
forwards per perturbation). Each side: one warm-up, then the median of 3 (Lantern) or 1 (Captum)
timed runs, `torch.cuda.synchronize()` inside the timing. Writes `$OUT/perturbation_gpu.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from bench.bench_perturbation import METHODS, TARGET, prompt_of
from bench.gpu_check import SMOLLM2
from schemas.jobs import parse_job
from schemas.models import ModelSpec
from workers.context import Context
from workers.methods.attribution import run as attribute
from workers.models.loading import wrap

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of this script only


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def timed_cuda(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    out = None
    for _ in range(warmup):
        out = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def model(tok, dtype):
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(**SMOLLM2)).to(DEV, dtype).eval()
    return wrap(ModelSpec(id="smollm2-shape", path="-", device=DEV), m, tok, dtype=dtype)


def rows(tok, dtype, lengths, out: dict) -> None:
    """Every method at every prompt length on a fresh SmolLM2-shaped model of `dtype`."""
    from captum.attr import FeatureAblation, KernelShap, Lime, LLMAttribution, TextTokenInput

    lm = model(tok, dtype)
    warm = TextTokenInput(prompt_of(lm, 16), tok, baselines=tok.pad_token_id)
    with torch.no_grad():  # Captum's first call on this model, so neither side pays a cold start
        LLMAttribution(FeatureAblation(lm.model), tok).attribute(warm, target=TARGET, forward_in_tokens=False)
    for n in lengths:
        prompt = prompt_of(lm, n)
        inp = TextTokenInput(prompt, tok, baselines=tok.pad_token_id)
        for method, extra in METHODS:
            job = parse_job({"kind": "attribution", "model": "m", "input": {"prompt": prompt, "target": TARGET},
                             "params": {"method": method, **extra}})
            ours, res = timed_cuda(lambda: attribute(lm, job, Context()), repeats=3)
            peer = {"occlusion": FeatureAblation, "lime": Lime, "kernel_shap": KernelShap}[method](lm.model)
            llm = LLMAttribution(peer, tok)
            kwargs = {"n_samples": extra["n_samples"]} if extra else {}
            with torch.no_grad():
                fast, cap = timed_cuda(lambda: llm.attribute(inp, target=TARGET, forward_in_tokens=False, **kwargs),
                                       1, warmup=0)
                default, _ = timed_cuda(lambda: llm.attribute(inp, target=TARGET, **kwargs), 1, warmup=0)
            row = {"dtype": str(dtype).removeprefix("torch."), "method": method, **extra,
                   "prompt_tokens": len(res.input_tokens), "lantern_s": round(ours, 4),
                   "captum_fast_s": round(fast, 4), "captum_default_s": round(default, 4),
                   "speedup_vs_fastest": round(min(fast, default) / ours, 1),
                   "forwards": res.perturbation.forwards, "distinct": res.perturbation.distinct,
                   "positions": round(res.perturbation.positions_run / res.perturbation.positions_plain, 2)}
            if method == "occlusion":  # same numbers? Captum's sequence attribution = Σ over target tokens
                ours_seq = torch.tensor(res.scores).sum(0)
                theirs = cap.seq_attr.float().cpu()
                if theirs.shape == ours_seq.shape:
                    row["cosine_vs_captum"] = round(float(torch.nn.functional.cosine_similarity(ours_seq, theirs, 0)), 4)
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
            if os.environ.get("OUT"):  # row by row, so a run cut short still brings its rows back
                with open(os.path.join(os.environ["OUT"], "perturbation_gpu_rows.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")


def main() -> int:
    tok = AutoTokenizer.from_pretrained(os.environ.get("LANTERN_GPU_TOKENIZER", ".gpu/smollm2-tok"))
    out = {"device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu", "torch": torch.__version__, "rows": []}
    plan = [(torch.bfloat16, (16, 64, 256)), (torch.float32, (64,))] if DEV == "cuda" else [(torch.float32, (16,))]
    for dtype, lengths in plan:
        rows(tok, dtype, lengths, out)  # the model is freed on return
        if DEV == "cuda":
            torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "perturbation_gpu.json"), "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
