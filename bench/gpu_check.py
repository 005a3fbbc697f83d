"""One short CUDA check (run on a lent GPU): bf16 vs fp32 on a SmolLM2-shaped LLaMA (random weights:
the GGUF file is too large to carry; timings and memory do not depend on the weight values).

Reports: batch sizing from free memory, IG (50 steps) time and peak memory at 64/256/512 tokens in
bf16 and fp32, bf16-vs-fp32 agreement of the attributions, completeness, and decoding tokens/s.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from schemas.jobs import parse_job
from schemas.limits import Limits
from schemas.models import ModelSpec
from tests.tiny import tokenizer
from workers.context import Context
from workers.internals.batching import batch_tokens
from workers.internals.decoding import decode
from workers.methods import attribution
from workers.models.loading import wrap

SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
               rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def model(dtype):
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(**SMOLLM2)).to("cuda", dtype)
    return wrap(ModelSpec(id="smollm2-shape", path="-", device="cuda"), m, tokenizer("bpe"), dtype=dtype)


def ig(lm, n):
    ids = list(torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(n)).tolist())
    prompt = lm.tokenizer.decode(ids)
    req = parse_job({"kind": "attribution", "model": "m", "input": {"prompt": prompt, "target": " Mary"},
                     "params": {"n_steps": 50}})
    torch.cuda.synchronize()
    attribution.run(lm, req, Context(limits=Limits(max_prompt_tokens=4096)))  # warm-up
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = attribution.run(lm, req, Context(limits=Limits(max_prompt_tokens=4096)))
    torch.cuda.synchronize()
    return res, time.perf_counter() - t0, torch.cuda.max_memory_allocated()


def main():
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    lms = {"bf16": model(torch.bfloat16), "fp32": model(torch.float32)}
    out["batch_tokens"] = {k: batch_tokens(lm) for k, lm in lms.items()}
    for n in (64, 256, 512):
        row = {}
        scores = {}
        for k, lm in lms.items():
            res, secs, peak = ig(lm, n)
            scores[k] = torch.tensor(res.scores[0])
            row[k] = {"ig_s": round(secs, 3), "peak_gib": round(peak / 2**30, 2),
                      "rel_error": round(res.convergence.relative_error[0], 4)}
        a, b = scores["bf16"], scores["fp32"]
        row["bf16_vs_fp32_cosine"] = round(float(torch.nn.functional.cosine_similarity(a, b, 0)), 4)
        out[f"ig_{n}"] = row
        print(n, row, flush=True)
    for k, lm in lms.items():
        ids = list(range(3, 67))
        decode(lm, ids, 8)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        d = decode(lm, ids, 128, stop_at_eos=False)
        torch.cuda.synchronize()
        out[f"decode_tok_s_{k}"] = round(len(d.ids) / (time.perf_counter() - t0), 1)
    print(json.dumps(out, indent=1))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
