"""`generate`: a continuation of the prompt, greedy (temperature 0) or sampled with `seed`."""

from __future__ import annotations

from schemas.kinds.generate import GenerateParams, GenerateResult
from schemas.limits import Limits
from workers.decoding import decode
from workers.inputs import encode_prompt
from workers.interventions import applied
from workers.models.loading import LM
from workers.progress import Progress


def run(lm: LM, request, progress: Progress, limits: Limits | None = None) -> GenerateResult:
    params: GenerateParams = request.params
    limits = limits or Limits()
    prompt = encode_prompt(lm, request.input, limits)
    with applied(lm, params):
        out = decode(lm, prompt.ids, params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                     top_k=params.top_k, seed=params.seed, stop_at_eos=params.stop_at_eos, progress=progress)
    return GenerateResult(
        text=lm.tokenizer.decode(out.ids, skip_special_tokens=True),
        tokens=lm.token_strings(out.ids),
        token_ids=out.ids,
        token_logprobs=out.logprobs,
        finish_reason=out.finish_reason,
        prompt_tokens=len(prompt.ids),
    )
