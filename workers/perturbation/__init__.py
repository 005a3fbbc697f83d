"""Perturbation attribution (occlusion, LIME, KernelSHAP) on a prefix-shared, batched scorer.

`run` is called by `workers.methods.attribution.run` for the perturbation methods; modules:
`units` (what is removed and what replaces it), `batched` (`MaskScorer`), `occlusion`, `lime`,
`kernel_shap`, and `faithfulness` (deletion/insertion checks of any method's scores, through the same
`MaskScorer`; it lives here, below this module, so the package and it import in one direction).
"""

from __future__ import annotations

import torch

from schemas.kinds.attribution import (
    AttributionJob,
    AttributionParams,
    AttributionResult,
    Efficiency,
    PerturbationStats,
    Surrogate,
)
from schemas.limits import over
from workers.context import Context
from workers.errors import BadInput
from workers.internals.scoring import Target, resolve_target
from workers.models.loading import LM
from workers.perturbation import faithfulness
from workers.perturbation.batched import MaskScorer
from workers.perturbation.kernel_shap import kernel_shap
from workers.perturbation.lime import lime
from workers.perturbation.occlusion import occlusion
from workers.perturbation.units import Units, make_units, replacement
from workers.progress import Progress

__all__ = ["run", "scorer_for", "faithfulness_for"]


def scorer_for(lm: LM, target: Target, params: AttributionParams) -> tuple[MaskScorer, Units, str]:
    units = make_units(lm, target, params.granularity, params.fix_special_tokens)
    vec, desc = replacement(lm, params.baseline)
    return MaskScorer(lm, target, units, vec, params.target_metric), units, desc


def faithfulness_for(lm: LM, target: Target, params: AttributionParams, scores, progress: Progress):
    """Faithfulness of (T, U) unit scores from any method (gradient methods call this too)."""
    scorer, units, desc = scorer_for(lm, target, params)
    return faithfulness.evaluate(scorer, scores[:, units.free], desc, params.seed, progress)


def run(lm: LM, job: AttributionJob, ctx: Context) -> AttributionResult:
    params: AttributionParams = job.params
    progress, limits = ctx.progress, ctx.limits
    if params.method in ("lime", "kernel_shap") and params.n_samples > limits.max_samples:
        err = over(["params", "n_samples"], params.n_samples, "max_samples", limits.max_samples)
        raise BadInput(err.msg, [err])
    target = resolve_target(lm, job.input, job.input.target, params.max_new_tokens, limits)
    scorer, units, desc = scorer_for(lm, target, params)
    main_span = 0.8 if params.faithfulness else 1.0
    main = lambda f: progress(main_span * f)  # noqa: E731
    base_value = efficiency = surrogate = None
    if params.method == "occlusion":
        free = occlusion(scorer, params.window, main)
    elif params.method == "lime":
        free, intercept, r2 = lime(scorer, params.n_samples, params.seed, params.kernel_width, main)
        surrogate = Surrogate(kernel_width=params.kernel_width, intercept=intercept, r2=r2)
    elif params.method == "kernel_shap":
        free, base_value = kernel_shap(scorer, params.n_samples, params.seed, main)
        f_x = scorer.f_input.cpu()
        delta = free.double().sum(-1) - (f_x.double() - torch.tensor(base_value, dtype=torch.float64))
        efficiency = Efficiency(f_input=f_x.tolist(), f_baseline=base_value, delta=delta.tolist())
    else:
        raise ValueError(f"{params.method} is not a perturbation method")
    stats = PerturbationStats(**vars(scorer.stats))
    faith = None
    if params.faithfulness:
        faith = faithfulness.evaluate(scorer, free, desc, params.seed, lambda f: progress(main_span + (1 - main_span) * f))
    progress(1.0)
    word = params.granularity == "word"
    return AttributionResult(provenance=ctx.provenance(lm, job), 
        method=params.method,
        target_metric=params.target_metric,
        input_tokens=units.tokens,
        target_tokens=lm.token_strings(target.target_ids),
        target_generated=target.generated,
        scores=units.full(free.float().cpu()).tolist(),
        target_logprobs=scorer.logprob_input.tolist(),
        unit_spans=[list(s) for s in units.spans] if word else None,
        base_value=base_value,
        efficiency=efficiency,
        surrogate=surrogate,
        perturbation=stats,
        replacement=desc,
        faithfulness=faith,
    )

