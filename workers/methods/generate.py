"""`generate`: a continuation of the prompt, greedy (temperature 0) or sampled with `seed`.

Interventions (`steering`, `edits`) apply to the decoding; `compare_baseline` decodes again
without them, same seed, so the two continuations differ only by the intervention."""

from __future__ import annotations

from schemas.kinds.generate import GenerateJob, GenerateParams, GenerateResult
from workers.context import Context
from workers.internals.decoding import decode
from workers.internals.inputs import encode_prompt
from workers.interventions.applied import applied
from workers.models.loading import LM


def run(lm: LM, job: GenerateJob, ctx: Context) -> GenerateResult:
    progress, limits = ctx.progress, ctx.limits
    params: GenerateParams = job.params
    prompt = encode_prompt(lm, job.input, limits)

    def generate(progress):
        return decode(lm, prompt.ids, params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k, seed=params.seed, stop_at_eos=params.stop_at_eos, progress=progress)

    with applied(lm, params, ctx.store):
        out = generate(progress if not params.compare_baseline else lambda f: progress(f / 2))
    base = generate(lambda f: progress(0.5 + f / 2)) if params.compare_baseline else None
    return GenerateResult(provenance=ctx.provenance(lm, job), 
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
