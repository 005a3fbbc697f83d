"""`generate`: a continuation of the prompt, greedy (temperature 0) or sampled with `seed`.

Interventions (`steering`, `edits`) apply to the decoding; `compare_baseline` decodes again
without them, same seed, so the two continuations differ only by the intervention."""

from __future__ import annotations

from schemas.kinds.generate import GenerateParams, GenerateResult
from schemas.limits import Limits
from workers.artifacts import ArtifactStore
from workers.decoding import decode
from workers.inputs import encode_prompt
from workers.interventions import applied
from workers.models.loading import LM
from workers.progress import Progress


def run(lm: LM, request, progress: Progress, limits: Limits | None = None,
        store: ArtifactStore | None = None) -> GenerateResult:
    params: GenerateParams = request.params
    limits = limits or Limits()
    prompt = encode_prompt(lm, request.input, limits)

    def generate(progress):
        return decode(lm, prompt.ids, params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k, seed=params.seed, stop_at_eos=params.stop_at_eos, progress=progress)

    with applied(lm, params, store):
        out = generate(progress if not params.compare_baseline else lambda f: progress(f / 2))
    base = generate(lambda f: progress(0.5 + f / 2)) if params.compare_baseline else None
    return GenerateResult(
        text=lm.tokenizer.decode(out.ids, skip_special_tokens=True),
        tokens=lm.token_strings(out.ids),
        token_ids=out.ids,
        token_logprobs=out.logprobs,
        finish_reason=out.finish_reason,
        prompt_tokens=len(prompt.ids),
        baseline_text=lm.tokenizer.decode(base.ids, skip_special_tokens=True) if base else None,
        baseline_tokens=lm.token_strings(base.ids) if base else None,
        baseline_token_ids=base.ids if base else None,
        baseline_token_logprobs=base.logprobs if base else None,
    )
