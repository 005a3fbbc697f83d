"""Train a small LLaMA from scratch on the agreement grammar (workers/datasets/grammar.py), on CPU,
saving checkpoints on a log-spaced schedule as HF folders, and register them as a Lantern model.

    python -m bench.train_checkpoints [--out .lantern/checkpoints/grammar-llama] [--steps 2000]

(`make checkpoints` runs this with the defaults, then bench/eval_checkpoints.py.) Writes under --out:
`step-NNNNNN/` (config + safetensors per checkpoint), the word-level tokenizer (built with
`tokenizers` from the grammar's vocabulary) in the final step's folder, `train_log.json` (the
training loss per step) and `models.json`: one registry entry (`LANTERN_MODELS_FILE=<out>/models.json`)
whose base is the final step and whose `checkpoints` are all of them. Deterministic for a seed on one
thread; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from workers.datasets.grammar import Grammar, vocabulary

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MODEL_ID = "grammar-llama"


def build_tokenizer():
    """A word-level tokenizer over the grammar's vocabulary: whitespace split, `<s>` prepended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIALS, *vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def schedule(steps: int, n: int) -> list[int]:
    """Step 0 and about n-1 log-spaced steps in [1, steps], always ending at `steps`."""
    out = {0, steps}
    k = n - 1
    while len(out) < n and k < 10 * n:
        out = {0, steps} | {max(1, round(math.exp(math.log(steps) * i / (k - 1)))) for i in range(k)}
        k += 1
    return sorted(out)


def batch(grammar: Grammar, tok, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = tok([" ".join(grammar.sentence().words) for _ in range(size)], padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc["input_ids"], enc["attention_mask"], labels


def train(out: Path, steps: int = 2000, n_checkpoints: int = 20, layers: int = 4, heads: int = 4, hidden: int = 64,
          batch_size: int = 32, lr: float = 1e-3, warmup: int = 50, seed: int = 0, threads: int = 1,
          log=print) -> dict:
    """Train and save; returns the registry entry written to `out/models.json`."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    grammar = Grammar(seed=seed + 1)
    saves = schedule(steps, n_checkpoints)
    checkpoints, losses = [], []
    t0 = time.perf_counter()

    def save(step: int) -> None:
        folder = out / f"step-{step:06d}"
        model.save_pretrained(folder)
        checkpoints.append({"step": step, "source": "dir", "path": str(folder.resolve())})

    for step in range(steps + 1):
        if step in saves:
            save(step)
        if step == steps:
            break
        ids, mask, labels = batch(grammar, tok, batch_size)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 5))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps}  loss {loss.item():.3f}  {time.perf_counter() - t0:.0f}s")
    final = out / f"step-{steps:06d}"
    tok.save_pretrained(final)
    entry = {"id": MODEL_ID, "task": "causal_lm", "source": "dir", "path": str(final.resolve()),
             "revision": f"{MODEL_ID}-seed{seed}-step{steps}", "dtype": "float32", "device": "cpu",
             "checkpoints": checkpoints}
    (out / "models.json").write_text(json.dumps([entry], indent=1))
    (out / "train_log.json").write_text(json.dumps({
        "config": {"steps": steps, "layers": layers, "heads": heads, "hidden": hidden, "batch_size": batch_size,
                   "lr": lr, "warmup": warmup, "seed": seed, "threads": threads,
                   "parameters": sum(p.numel() for p in model.parameters())},
        "seconds": round(time.perf_counter() - t0, 1), "loss": losses}))
    return entry


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(".lantern/checkpoints/grammar-llama"))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--checkpoints", type=int, default=20)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    entry = train(a.out, a.steps, a.checkpoints, a.layers, a.heads, a.hidden, a.batch_size, a.lr, seed=a.seed,
                  threads=a.threads)
    print(f"{len(entry['checkpoints'])} checkpoints; LANTERN_MODELS_FILE={a.out / 'models.json'}")


if __name__ == "__main__":
    main()
