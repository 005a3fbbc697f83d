"""Token-by-token decoding with a KV cache: greedy or sampled, with per-token log-probabilities.

A loop of our own rather than `generate()`: it reports progress (and so honours cancel and
deadline) per token, returns the log-probabilities of the chosen tokens, and keeps any hooks a
job installs (steering, edits) in force for every step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM

from workers.models.loading import LM
from workers.progress import Progress, no_progress


@dataclass
class Decoded:
    ids: list[int]
    logprobs: list[float]  # log p(token | prefix), untempered
    finish_reason: str  # "eos" or "length"


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus (Holtzman et al. 2020) filtering of one row of logits, (V,) -> (V,)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


# transformers 5.2x renamed `past_key_values` to `cache` (input and output); accept either.
CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def eos_ids(lm: LM) -> set[int]:
    configured = getattr(lm.config, "eos_token_id", None)
    ids = {lm.tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    return {i for i in ids if i is not None}


@torch.no_grad()
def decode(lm: LM, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 0.0,
           top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_at_eos: bool = True,
           progress: Progress = no_progress) -> Decoded:
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    eos = eos_ids(lm)
    step_ids = torch.tensor([prompt_ids], device=lm.device)  # (1, seq)
    past = None
    ids: list[int] = []
    logprobs: list[float] = []
    finish = "length"
    for step in range(max_new_tokens):
        out = lm.model(input_ids=step_ids, **{CACHE_ARG: past}, use_cache=True, logits_to_keep=1)
        past = out[CACHE_ARG]
        logits = out.logits[0, -1].float()  # (vocab,)
        logp = torch.log_softmax(logits, -1)
        if temperature == 0.0:
            nxt = int(torch.argmax(logits))
        else:
            probs = torch.softmax(_filter(logits / temperature, top_k, top_p), -1)
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(nxt)
        logprobs.append(float(logp[nxt]))
        progress((step + 1) / max_new_tokens)
        if stop_at_eos and nxt in eos:
            finish = "eos"
            break
        step_ids = torch.tensor([[nxt]], device=lm.device)
    return Decoded(ids, logprobs, finish)
