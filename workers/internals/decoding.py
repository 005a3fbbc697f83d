"""Token-by-token decoding with a KV cache: greedy or sampled, with per-token log-probabilities.

A loop of our own rather than `generate()`: it reports progress (and so honours cancel and
deadline) per token, returns the log-probabilities of the chosen tokens, and keeps any hooks a
job installs (steering, edits) in force for every step. Sampling (`sample_next`) works in float64
relative to the top logit, so tiny temperatures and `top_p` cannot overflow it into NaN.
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


# Below this temperature sampling is greedy: the tempered distribution is one-hot up to float error
# anyway, and dividing by a vanishing temperature is where the arithmetic would overflow.
GREEDY_TEMPERATURE = 1e-5


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus (Holtzman et al. 2020) filtering of one row of logits, (V,) -> (V,).

    The most likely token is always kept, whatever `top_p` (a `top_p` that rounds to 0 in the
    logits' dtype would otherwise drop every token)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the token that crosses top_p
        drop[0] = False  # and always the top token
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator) -> int:
    """The next token from one row of logits (V,): argmax when `temperature` < GREEDY_TEMPERATURE,
    else a draw from softmax(logits / temperature) after top-k and top-p filtering.

    In float64 and relative to the maximum, (logits − max) / temperature is ≤ 0 and at worst −inf
    (probability 0), never +inf or NaN: no temperature or top_p the schema admits can break it."""
    if temperature < GREEDY_TEMPERATURE:
        return int(torch.argmax(logits))
    z = logits.double()
    z = (z - z.max()) / temperature
    probs = torch.softmax(_filter(z, top_k, top_p), -1)
    return int(torch.multinomial(probs, 1, generator=generator))


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
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        ids.append(nxt)
        logprobs.append(float(logp[nxt]))
        progress((step + 1) / max_new_tokens)
        if stop_at_eos and nxt in eos:
            finish = "eos"
            break
        step_ids = torch.tensor([[nxt]], device=lm.device)
    return Decoded(ids, logprobs, finish)
