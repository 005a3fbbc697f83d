"""The explained quantity: a target continuation scored under teacher forcing.

For a prompt p (n tokens) and a target t (T tokens) the model reads s = p ++ t[:-1] (L = n+T-1
positions); the last T positions predict t_0 .. t_{T-1}. One forward therefore scores the whole
target, and logits are computed only at those T positions (`logits_to_keep`), never over the
whole sequence: a large vocabulary's unembedding is a sizeable share of a forward per position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from schemas.common import TextInput
from schemas.limits import Limits
from workers.errors import BadInput
from workers.internals.decoding import decode
from workers.internals.inputs import encode_continuation, encode_prompt
from workers.models.loading import LM, Encoded
from workers.progress import Progress, no_progress


@dataclass
class Target:
    prompt: Encoded
    target_ids: list[int]
    generated: bool

    @property
    def n(self) -> int:
        return len(self.prompt.ids)

    @property
    def T(self) -> int:
        return len(self.target_ids)

    @property
    def seq_ids(self) -> list[int]:
        """p ++ t[:-1]: what the model reads, (L,)."""
        return self.prompt.ids + self.target_ids[:-1]


def resolve_target(lm: LM, text: TextInput, target: str | None, max_new_tokens: int, limits: Limits,
                   progress: Progress = no_progress) -> Target:
    """Encode the prompt and the given target, or generate the greedy continuation as target."""
    prompt = encode_prompt(lm, text, limits)
    if target is not None:
        target_ids = encode_continuation(lm, target)
        if len(target_ids) > limits.max_new_tokens:
            raise BadInput(f"the target has {len(target_ids)} tokens, over max_new_tokens={limits.max_new_tokens}")
        return Target(prompt, target_ids, generated=False)
    decoded = decode(lm, prompt.ids, max_new_tokens, progress=progress)
    return Target(prompt, decoded.ids, generated=True)


METRICS = ("logprob", "prob", "logit")


def target_metric(logits: torch.Tensor, target: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(metric, logprob), each (batch, T), of the T target ids (T,) read off the last T positions of
    logits (batch, >=T, vocab)."""
    T = target.shape[0]
    logits = logits[:, -T:].float()  # (batch, T, vocab)
    picked = logits.gather(-1, target.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1)  # (batch, T)
    logprob = picked - torch.logsumexp(logits, -1)  # (batch, T)
    if metric == "logit":
        return picked, logprob
    if metric == "prob":
        return logprob.exp(), logprob
    return logprob, logprob


class TargetScorer:
    """f(inputs) -> (metric, logprob), each (batch, T), for one target under teacher forcing."""

    def __init__(self, lm: LM, target: Target, metric: str = "logprob"):
        if metric not in METRICS:
            raise ValueError(f"unknown target metric {metric!r}")
        self.lm = lm
        self.metric = metric
        self.T = target.T
        self.target = torch.tensor(target.target_ids, device=lm.device)  # (T,)

    def __call__(self, inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                 **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.lm.model(inputs_embeds=inputs_embeds, input_ids=input_ids, use_cache=False,
                            logits_to_keep=self.T, **model_kwargs)
        return target_metric(out.logits, self.target, self.metric)
