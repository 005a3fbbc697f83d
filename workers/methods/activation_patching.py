"""`activation_patching`: the effect of each component on a clean/corrupted pair (Meng et al. 2022;
Wang et al. 2022 §3; Heimersheim & Nanda 2024), exact (`workers.patching.exact`) or by attribution
patching (`workers.patching.attribution`). Reference implementations: TransformerLens's
`patching.get_act_patch_*` (one forward per patch; ours batches and skips unchanged work, equal to
1e-4) and Nanda's attribution-patching notebook.

Denoising runs the corrupted prompt with one clean activation patched in; noising the reverse.
Either way the reported effect is (metric − corrupted) / (clean − corrupted), with metrics averaged
over pairs first, so 1 means the clean behaviour and 0 the corrupted one. Head components are
patched at every position unless `per_position`; keys and values are per KV head under GQA.
"""

from __future__ import annotations

import math

import torch

from schemas.common import FieldError, TextInput
from schemas.kinds.activation_patching import (
    HEAD_COMPONENTS,
    ActivationPatchingJob,
    ActivationPatchingParams,
    ActivationPatchingResult,
    PatchCheck,
    PatchPair,
)
from schemas.limits import Limits
from workers.context import Context
from workers.datasets.ioi import ioi_pairs
from workers.errors import BadInput
from workers.internals.inputs import encode_one_token, encode_prompt, resolve_indices
from workers.models.loading import LM
from workers.patching import attribution
from workers.patching.exact import BaseRun, Counts, Metric, Patch, base_run, patched_metrics, read_run
from workers.patching.sites import Site, site_of
from workers.progress import Progress

MIN_SPREAD = 1e-6  # |clean − corrupted| below this leaves nothing to normalise by


def _one_token(lm: LM, text: str, loc: list[str | int]) -> int:
    return encode_one_token(lm, text, loc, "patching compares single next tokens")


def _metric(lm: LM, pair: PatchPair, kind: str, loc: list[str | int]) -> Metric:
    answer = _one_token(lm, pair.answer, [*loc, "answer"])
    if kind == "logprob":
        return Metric(answer)
    if pair.wrong_answer is None:
        msg = "metric 'logit_diff' needs `wrong_answer` (or use metric 'logprob')"
        raise BadInput(msg, [FieldError(loc=[*loc, "wrong_answer"], msg=msg, type="missing")])
    return Metric(answer, _one_token(lm, pair.wrong_answer, [*loc, "wrong_answer"]))


def _encode_pairs(lm: LM, pairs: list[PatchPair], limits: Limits, single: bool,
                  per_position: bool) -> list[tuple[list[int], list[int]]]:
    out = []
    for k, pair in enumerate(pairs):
        loc: list[str | int] = ["input"] if single else ["input", "pairs", k]
        clean = encode_prompt(lm, TextInput(prompt=pair.clean_prompt), limits, (*loc, "clean_prompt")).ids
        corrupt = encode_prompt(lm, TextInput(prompt=pair.corrupted_prompt), limits, (*loc, "corrupted_prompt")).ids
        if len(clean) != len(corrupt):
            msg = (f"clean and corrupted prompts must be the same number of tokens: {len(clean)} vs {len(corrupt)}; "
                   f"clean {lm.token_strings(clean)}, corrupted {lm.token_strings(corrupt)}")
            raise BadInput(msg, [FieldError(loc=[*loc, "corrupted_prompt"], msg=msg, type="length_mismatch", ctx={
                "clean_tokens": lm.token_strings(clean), "corrupted_tokens": lm.token_strings(corrupt)})])
        out.append((clean, corrupt))
    lengths = {len(c) for c, _ in out}
    if per_position and len(lengths) > 1:
        msg = f"every pair must have the same number of tokens (effects are per position); got {sorted(lengths)}"
        raise BadInput(msg, [FieldError(loc=["input", "pairs"], msg=msg, type="length_mismatch")])
    return out


def _patches(params: ActivationPatchingParams, layers: list[int], units: list[int] | None,
             positions: list[int] | None) -> list[Patch]:
    """Every patch in the row-major order of the result's grid."""
    out = []
    for layer in layers:
        for unit in units or [None]:
            for pos in positions or [None]:
                out.append(Patch(layer, pos, unit))
    return out


def _grid(values: list[float], shape: list[int]) -> list:
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    return t.tolist()


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    x, y = torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else None


def run(lm: LM, job: ActivationPatchingJob, ctx: Context) -> ActivationPatchingResult:
    progress, limits = ctx.progress, ctx.limits
    params: ActivationPatchingParams = job.params
    single = job.input.clean_prompt is not None
    if job.input.dataset is not None:
        pairs = [PatchPair(**p.model_dump(include=set(PatchPair.model_fields)))
                 for p in ioi_pairs(lm, job.input.dataset)]
    else:
        pairs = job.input.all_pairs()
    per_position = params.component not in HEAD_COMPONENTS or params.per_position
    encoded = _encode_pairs(lm, pairs, limits, single, per_position)
    metrics = [_metric(lm, pair, params.metric, ["input"] if single else ["input", "pairs", k])
               for k, pair in enumerate(pairs)]
    site = site_of(lm, params.component)
    T, L = len(encoded[0][0]), len(lm.layers)  # T: the common length when per position
    layers = resolve_indices(params.layers, L, ["params", "layers"], "layers")
    units = positions = None
    if params.component in HEAD_COMPONENTS:
        units = resolve_indices(params.heads, site.units, ["params", "heads"], "heads")
    if per_position:
        positions = resolve_indices(params.positions, T, ["params", "positions"], "positions")
    patches = _patches(params, layers, units, positions)

    counts = Counts()
    sums = torch.zeros(len(patches), dtype=torch.float64)
    clean_sum = corrupt_sum = 0.0
    runs: list[tuple[BaseRun, dict[int, torch.Tensor], Metric]] = []
    sources = _sources(lm, site, params, encoded, metrics, layers, counts)
    for k, ((clean, corrupt), metric) in enumerate(zip(encoded, metrics)):
        base_ids = corrupt if params.direction == "denoise" else clean
        source, source_metric = sources(k)
        part = _pair_progress(progress, k, len(pairs))
        if params.method == "exact":
            base = base_run(lm, base_ids, metric, counts)
            values = patched_metrics(lm, site, patches, base, source, metric, counts, part).double()
            base_metric = base.metric
        else:
            estimate, base_metric = attribution.estimates(lm, site, patches, base_ids, source, metric, counts)
            values = base_metric + estimate.double()
            runs.append((BaseRun(base_ids, base_metric, []), source, metric))
        sums += values
        clean_m, corrupt_m = (source_metric, base_metric) if params.direction == "denoise" else (base_metric,
                                                                                                  source_metric)
        clean_sum, corrupt_sum = clean_sum + clean_m, corrupt_sum + corrupt_m
    n = len(pairs)
    clean_mean, corrupt_mean = clean_sum / n, corrupt_sum / n
    spread = clean_mean - corrupt_mean
    if not math.isfinite(spread) or abs(spread) < MIN_SPREAD:
        msg = (f"the clean and corrupted runs give the same {params.metric} ({clean_mean:.6g} vs {corrupt_mean:.6g}): "
               "there is no effect to normalise; choose prompts whose answers differ")
        raise BadInput(msg, [FieldError(loc=["input"], msg=msg, type="no_effect")])
    effects = ((sums / n - corrupt_mean) / spread).tolist()

    checks = correlation = None
    if params.method == "attribution" and params.verify_top_k:
        checks, correlation = _verify(lm, site, patches, effects, params, runs, encoded, counts,
                                      corrupt_mean, spread, _grid_index(params, layers, units, positions))

    shape = [len(layers)] + ([len(units)] if units is not None else []) + ([len(positions)] if positions else [])
    first_clean, first_corrupt = encoded[0]
    return ActivationPatchingResult(provenance=ctx.provenance(lm, job), 
        clean_tokens=lm.token_strings(first_clean), corrupted_tokens=lm.token_strings(first_corrupt), n_pairs=n,
        metric=params.metric, clean_metric=clean_mean, corrupted_metric=corrupt_mean, axes=params.axes(),
        layers=layers, heads=units, positions=positions, effects=_grid(effects, shape), checks=checks,
        correlation=correlation, forwards=counts.forwards, positions_computed=counts.positions,
        positions_naive=counts.naive,
    )


def _sources(lm: LM, site: Site, params: ActivationPatchingParams, encoded, metrics: list[Metric], layers: list[int],
             counts: Counts):
    """k -> (what pair k's patches write, layer -> (T, units, width); the source prompt's metric),
    both from one forward of the source prompt. What is written: the other prompt's activation
    (`resample`), zero, or its mean over every pair's other prompt (`mean`, the mean ablation)."""
    def read(k: int) -> tuple[dict[int, torch.Tensor], float]:
        clean, corrupt = encoded[k]
        return read_run(lm, site, clean if params.direction == "denoise" else corrupt, layers, metrics[k], counts)
    if params.ablation == "resample":
        return read
    if params.ablation == "zero":
        def zero(k: int) -> tuple[dict[int, torch.Tensor], float]:
            acts, value = read(k)
            return {layer: torch.zeros_like(a) for layer, a in acts.items()}, value
        return zero
    if len({len(c) for c, _ in encoded}) > 1:
        msg = "ablation 'mean' averages over pairs position by position: every pair must have the same length"
        raise BadInput(msg, [FieldError(loc=["params", "ablation"], msg=msg, type="length_mismatch")])
    every = [read(k) for k in range(len(encoded))]
    mean = {layer: torch.stack([acts[layer] for acts, _ in every]).mean(0) for layer in layers}
    return lambda k: (mean, every[k][1])


def _pair_progress(progress: Progress, k: int, n: int) -> Progress:
    return lambda fraction: progress((k + fraction) / n)


def _grid_index(params, layers, units, positions):
    def index(p: Patch) -> list[int]:
        out = [layers.index(p.layer)]
        if units is not None:
            out.append(units.index(p.unit))
        if positions is not None:
            out.append(positions.index(p.position))
        return out
    return index


def _verify(lm: LM, site: Site, patches: list[Patch], estimates: list[float], params: ActivationPatchingParams,
            runs, encoded, counts: Counts, corrupt_mean: float, spread: float, index) -> tuple[list[PatchCheck],
                                                                                                float | None]:
    """Re-run the k estimates that move the metric most, exactly; report both and their correlation."""
    baseline = 1.0 if params.direction == "noise" else 0.0  # the normalised effect of no change
    k = min(params.verify_top_k, len(patches))
    top = sorted(range(len(patches)), key=lambda i: -abs(estimates[i] - baseline))[:k]
    chosen = [patches[i] for i in top]
    sums = torch.zeros(k, dtype=torch.float64)
    for base_info, source, metric in runs:
        base = base_run(lm, base_info.ids, metric, counts)
        sums += patched_metrics(lm, site, chosen, base, source, metric, counts).double()
    exact = ((sums / len(runs) - corrupt_mean) / spread).tolist()
    checks = [PatchCheck(index=index(p), estimate=estimates[i], exact=e) for p, i, e in zip(chosen, top, exact)]
    return checks, _pearson([c.estimate for c in checks], [c.exact for c in checks])
