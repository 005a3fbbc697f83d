"""`attribution`: gradient attribution of a target continuation to the prompt tokens.

- saliency (Simonyan et al. 2014): ‖∂f/∂x_i‖₂ over the embedding dimension, ≥ 0.
- input_x_gradient (Shrikumar et al. 2016): Σ_d x_id · ∂f/∂x_id.
- integrated_gradients (Sundararajan et al. 2017): Σ_d (x − x')_id ∫₀¹ ∂f/∂x_id(x' + α(x − x')) dα,
  with Captum's quadrature rules, so it equals Captum's LayerIntegratedGradients on the embedding
  layer for the same baseline, steps and rule (tested). Unlike Captum's LLMGradientAttribution,
  which re-runs the whole integral per target token, one forward per batch of path points scores
  every target token (teacher forcing), and one backward per target token reuses it
  (`retain_graph`); logits are computed at the target positions only. With one target token
  and equal steps the work is the same as Captum's (both take input gradients only, through
  `torch.autograd.grad`): measured 1.01-1.14x on SmolLM2 (BENCHMARKS.md).

f is the target token's log-probability (or probability, or logit) at its teacher-forced
position. Rows are target tokens, columns prompt tokens; earlier target tokens are fixed at their
embeddings (they are context, not explained input). Special tokens (BOS, chat markers) stay fixed
on the IG path when `fix_special_tokens` (their score is then 0): interpolating a BOS embedding
toward the baseline moves the model far off its training distribution.

Completeness on SmolLM2 (measured, IOI prompt, " Mary"): with every position interpolated, the
relative error of IG does not settle as steps grow (5.7 at 16 steps, 6.4 at 64, 0.88 at 256, pad
baseline; zero baseline alike). SmolLM2's tokenizer adds no BOS, so position 0 is an ordinary word
that carries the attention sink (Xiao et al. 2023: massive activations every head attends to);
moving its embedding along the path reshapes attention in every layer. Keeping position 0 fixed
(`fix_first_token`, default on; its score is then 0) makes the path well behaved (the completeness
errors: docs/attribution.md). The result always reports `convergence`, and `n_steps: "auto"` doubles steps
until the relative error meets `tolerance`.
"""

from __future__ import annotations

import torch

from schemas.common import ResultWarning
from schemas.kinds.attribution import (
    PERTURBATION_METHODS,
    AttributionJob,
    AttributionParams,
    AttributionResult,
    Convergence,
)
from schemas.limits import Limits
from workers import perturbation
from workers.context import Context
from workers.internals.batching import rows_per_batch
from workers.internals.inputs import word_spans
from workers.internals.scoring import Target, TargetScorer, resolve_target
from workers.interventions.applied import applied
from workers.models.loading import LM
from workers.numerics.quadrature import quadrature
from workers.perturbation.units import replacement
from workers.progress import Progress

AUTO_FIRST_STEPS = 16


def baseline_embeddings(lm: LM, target: Target, params: AttributionParams) -> torch.Tensor:
    """x' (L, d): the baseline at explained positions, the input itself at fixed positions."""
    ids = torch.tensor(target.seq_ids, device=lm.device)  # (L,)
    x = lm.embed(ids)  # (L, d)
    base, _ = replacement(lm, params.baseline)  # (d,)
    explained = explained_mask(target, params).to(lm.device)  # (L,)
    return torch.where(explained[:, None], base.expand_as(x), x)


def explained_mask(target: Target, params: AttributionParams) -> torch.Tensor:
    """(L,) bool: positions whose embedding is explained (prompt tokens, special ones optional)."""
    mask = torch.zeros(target.n + target.T - 1, dtype=torch.bool)
    mask[: target.n] = True
    if params.fix_special_tokens:
        mask[: target.n] &= ~torch.tensor(target.prompt.special, dtype=torch.bool)
    if params.fix_first_token:
        mask[0] = False
    return mask


def _weighted_grads(scorer: TargetScorer, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_b w_b ∂f_j/∂points_b for every target j: (B, L, d) -> (T, L, d).

    One forward for the batch, then one backward per target token through the same graph."""
    points.requires_grad_(True)
    metric, _ = scorer(inputs_embeds=points)  # (B, T)
    grads = []
    for j in range(scorer.T):
        (g,) = torch.autograd.grad(metric[:, j], points, grad_outputs=weights, retain_graph=j < scorer.T - 1)
        grads.append(g.sum(0))  # (L, d)
    return torch.stack(grads)


def integrated_gradients(lm: LM, target: Target, params: AttributionParams, n_steps: int,
                         progress: Progress, x: torch.Tensor, x0: torch.Tensor,
                         progress_span: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """IG attributions per target token and position, (T, L, d) summed to (T, L)."""
    scorer = TargetScorer(lm, target, params.target_metric)
    alphas, weights = quadrature(params.rule, n_steps)
    alpha = torch.tensor(alphas, device=lm.device, dtype=x.dtype)  # (S,)
    weight = torch.tensor(weights, device=lm.device, dtype=torch.float32)  # (S,)
    rows = rows_per_batch(lm, x.shape[0])
    total = torch.zeros(target.T, *x.shape, device=lm.device, dtype=torch.float32)  # (T, L, d)
    lo, hi = progress_span
    for start in range(0, n_steps, rows):
        a = alpha[start : start + rows, None, None]  # (B, 1, 1)
        points = (x0 + a * (x - x0)).detach()  # (B, L, d)
        total += _weighted_grads(scorer, points, weight[start : start + rows])
        progress(lo + (hi - lo) * min(start + rows, n_steps) / n_steps)
    return ((x - x0).float()[None] * total).sum(-1)  # (T, L)


def _gradients_at_input(lm: LM, target: Target, params: AttributionParams, x: torch.Tensor) -> torch.Tensor:
    scorer = TargetScorer(lm, target, params.target_metric)
    one = torch.ones(1, device=lm.device)
    g = _weighted_grads(scorer, x[None].detach().clone(), one)  # (T, L, d)
    if params.method == "saliency":
        return g.norm(dim=-1)  # (T, L)
    return (x.float()[None] * g).sum(-1)  # input_x_gradient, (T, L)


@torch.no_grad()
def _endpoints(lm: LM, target: Target, params: AttributionParams, x: torch.Tensor, x0: torch.Tensor):
    """f(x), f(x') and the target log-probabilities at x, each (T,)."""
    metric, logprob = TargetScorer(lm, target, params.target_metric)(inputs_embeds=torch.stack([x, x0]))
    return metric[0], metric[1], logprob[0]


def convergence_warning(convergence: Convergence, params: AttributionParams, limits: Limits) -> ResultWarning | None:
    """`ig-not-converged` when the largest relative completeness error is over `tolerance`: the
    attributions do not add up to f(x) − f(x′), so more steps (or `n_steps: "auto"`) are needed."""
    worst = max(range(len(convergence.relative_error)), key=convergence.relative_error.__getitem__)
    error = convergence.relative_error[worst]
    if error <= params.tolerance:
        return None
    if params.n_steps == "auto":
        advice = f"n_steps 'auto' stopped at the max_steps limit ({limits.max_steps})"
    else:
        advice = f"ask for more n_steps, or n_steps 'auto' (doubles from {AUTO_FIRST_STEPS} until the error is under tolerance)"
    return ResultWarning(
        type="ig-not-converged",
        detail=(f"integrated gradients: the attributions miss completeness by a relative error of {error:.3g} "
                f"(target token {worst}) with {convergence.n_steps} steps, over tolerance {params.tolerance}; {advice}"),
        ctx={"relative_error": error, "tolerance": params.tolerance, "n_steps": convergence.n_steps,
             "target_index": worst},
    )


def run(lm: LM, job: AttributionJob, ctx: Context) -> AttributionResult:
    """Explain `job` with any steering or edits it names in force for the whole job."""
    with applied(lm, job.params, ctx.store):
        return explain(lm, job, ctx)


def explain(lm: LM, job: AttributionJob, ctx: Context) -> AttributionResult:
    params: AttributionParams = job.params
    if params.method in PERTURBATION_METHODS:  # occlusion, lime, kernel_shap: workers/perturbation/
        return perturbation.run(lm, job, ctx)
    progress, limits = ctx.progress, ctx.limits
    target = resolve_target(lm, job.input, job.input.target, params.max_new_tokens, limits)
    x = lm.embed(torch.tensor(target.seq_ids, device=lm.device))  # (L, d)
    x0 = baseline_embeddings(lm, target, params)
    f_x, f_x0, target_logprobs = _endpoints(lm, target, params, x, x0)
    convergence = None
    warnings: list[ResultWarning] = []
    if params.method == "integrated_gradients":
        steps = AUTO_FIRST_STEPS if params.n_steps == "auto" else params.n_steps
        while True:
            if params.rule == "riemann_trapezoid":
                steps = max(steps, 2)
            scores = integrated_gradients(lm, target, params, steps, progress, x, x0)  # (T, L)
            delta = scores.sum(-1) - (f_x - f_x0)  # (T,)
            rel = delta.abs() / (f_x - f_x0).abs().clamp_min(1e-12)
            if params.n_steps != "auto" or float(rel.max()) <= params.tolerance or steps * 2 > limits.max_steps:
                break
            steps *= 2
        convergence = Convergence(
            rule=params.rule, n_steps=steps, delta=delta.tolist(), relative_error=rel.tolist(),
            f_input=f_x.tolist(), f_baseline=f_x0.tolist(),
        )
        if (warning := convergence_warning(convergence, params, limits)) is not None:
            warnings.append(warning)
    else:
        scores = _gradients_at_input(lm, target, params, x)
        progress(1.0)
    scores = scores[:, : target.n]  # (T, n): only prompt positions are explained
    tokens = lm.token_strings(target.prompt.ids)
    spans = None
    if params.granularity == "word":
        spans = word_spans(target.prompt)
        scores = torch.stack([scores[:, a:b].sum(-1) for a, b in spans], -1)  # (T, units)
        tokens = ["".join(tokens[a:b]) for a, b in spans]
    result = AttributionResult(provenance=ctx.provenance(lm, job), 
        method=params.method,
        target_metric=params.target_metric,
        input_tokens=tokens,
        target_tokens=lm.token_strings(target.target_ids),
        target_generated=target.generated,
        scores=scores.tolist(),
        target_logprobs=target_logprobs.tolist(),
        unit_spans=[list(s) for s in spans] if spans else None,
        convergence=convergence,
        warnings=warnings,
    )
    if params.faithfulness:
        result.faithfulness = perturbation.faithfulness_for(lm, target, params, scores, lambda f: progress(1.0))
    return result
