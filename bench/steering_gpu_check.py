"""One short CUDA check of ITI steering (run on a lent GPU): a SmolLM2-shaped LLaMA with random
weights (the GGUF file is too large to carry; speed does not depend on the weight values).

Reports greedy decoding tokens/s unsteered vs steered (13 heads, α = 15, runs interleaved), the
steered − unsteered logit difference at α = 0 (must be exactly 0), and `steering_fit`'s two stages
for 200 examples: head-activation collection on the GPU and the batched probe solve.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from bench.gpu_check import model
from schemas.kinds.steering_fit import SteeringFitParams
from workers.internals.activations import collect
from workers.internals.decoding import decode
from workers.interventions.steering import layer_vectors, steered
from workers.methods.steering_fit import fit_heads
from workers.numerics.probing import make_splits
from workers.progress import no_progress


def main(out_dir: str) -> None:
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for dtype in (torch.bfloat16, torch.float32):
        lm = model(dtype)
        rng = np.random.default_rng(0)
        seqs = [rng.integers(3, 300, size=int(rng.integers(12, 30))).tolist() for _ in range(200)]
        y = np.array([i % 2 for i in range(200)])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        acts = collect(lm, seqs, "attn_head").numpy()  # (200, 30, 9, 64)
        torch.cuda.synchronize()
        t_collect = time.perf_counter() - t0
        params = SteeringFitParams()
        splits, _ = make_splits(y, None, params)
        t0 = time.perf_counter()
        _, heads = fit_heads(acts, y, params, 13, splits, no_progress)
        t_fit = time.perf_counter() - t0
        vectors = layer_vectors(lm, {"heads": heads}, 15.0)
        prompt = seqs[0]
        timings: dict[str, list[float]] = {"plain": [], "steered": []}
        for r in range(8):
            for name in ("plain", "steered"):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                if name == "plain":
                    decode(lm, prompt, 128, stop_at_eos=False)
                else:
                    with steered(lm, vectors):
                        decode(lm, prompt, 128, stop_at_eos=False)
                torch.cuda.synchronize()
                if r:
                    timings[name].append(time.perf_counter() - t0)
        plain, steer = (128 / statistics.median(timings[k]) for k in ("plain", "steered"))
        ids = torch.tensor([prompt], device="cuda")
        with torch.no_grad():
            base = lm.model(input_ids=ids).logits
            with steered(lm, layer_vectors(lm, {"heads": heads}, 0.0)):
                zero = lm.model(input_ids=ids).logits
        report[str(dtype).removeprefix("torch.")] = {
            "collect_200_s": round(t_collect, 3), "probe_solve_1350_s": round(t_fit, 3),
            "tokens_per_s_plain": round(plain, 1), "tokens_per_s_steered": round(steer, 1),
            "overhead_pct": round(100 * (plain / steer - 1), 2),
            "alpha0_max_abs_logit_diff": float((base - zero).abs().max()),
            "steered_layers": len(vectors),
        }
        print(json.dumps(report, indent=1), flush=True)
        del lm
        torch.cuda.empty_cache()
    with open(os.path.join(out_dir, "steering_gpu.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
