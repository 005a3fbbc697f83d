"""`steering_fit`: an ITI steering profile from true/false completions (Li et al. 2023).

As the paper (§3, "Inference-Time Intervention") and its reference code (`honest_llama`:
`get_llama_activations_bau`, `train_probes`, `get_top_heads`, `get_com_directions`,
`get_interventions_dict`):
1. the head output (input of the attention output projection, per query head) at the last token
   of prompt + completion, for every layer and head;
2. a logistic-regression probe per (layer, head), scored on held-out examples;
3. the `n_heads` heads of highest validation accuracy;
4. per selected head a unit direction θ: the mass-mean shift (mean of true − mean of false, the
   paper's best variant) or the probe's weight (`direction: "probe"`); σ = the standard deviation
   of the activations projected on θ (`np.std(activations @ θ)` in the reference).
At inference α·σ·θ is added to each selected head's output (`workers/interventions/steering.py`).

Differences from the reference code: k-fold validation with label stratification and
`group`-aware folds (the reference splits by question with one 80/20 split: `holdout: 0.2` and a
`group` per question reproduce it); directions and σ use all examples (the reference's mass mean
also uses train + validation); the probe direction comes from a probe refit on all examples.
Default `n_heads`: the paper steers 48 of LLaMA-7B's 1024 heads (4.7%); we take the same share of
the model's heads, round(48/1024 × layers × heads), at least 1 (13 of 270 on SmolLM2-135M).
"""

from __future__ import annotations

import numpy as np

from schemas.kinds.steering_fit import (
    PAPER_HEADS,
    PAPER_TOTAL_HEADS,
    SteeredHead,
    SteeringExample,
    SteeringFitJob,
    SteeringFitParams,
    SteeringFitResult,
)
from schemas.limits import Limits, over
from workers.context import Context
from workers.errors import BadInput
from workers.internals.activations import collect
from workers.models.loading import LM
from workers.numerics.probing import chance, make_splits, probe_weight, validation_accuracy
from workers.progress import Progress

ARTIFACT_KIND = "steering-profiles"


def default_n_heads(n_layers: int, heads: int) -> int:
    return max(1, round(PAPER_HEADS / PAPER_TOTAL_HEADS * n_layers * heads))


def example_ids(lm: LM, example: SteeringExample, limits: Limits, index: int = 0) -> list[int]:
    """Prompt (or rendered chat) ids + completion ids, as the model reads them when it generates."""
    prompt = lm.encode(example).ids
    completion = list(lm.tokenizer(example.completion, add_special_tokens=False)["input_ids"])
    if not completion:
        raise BadInput(f"example {index}: the completion has no tokens")
    ids = prompt + completion
    if len(ids) > limits.max_prompt_tokens:
        err = over(["input", "examples", index], len(ids), "max_prompt_tokens", limits.max_prompt_tokens)
        raise BadInput(err.msg, [err])
    return ids


def fit_heads(acts: np.ndarray, y: np.ndarray, params: SteeringFitParams, n_select: int, splits,
              progress: Progress, progress_span: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, list[dict]]:
    """Accuracy grid (layers, heads) and the selected heads with unit direction θ and σ.

    acts: (N, layers, heads, head_dim) head outputs; y: (N,) 1 = true, 0 = false."""
    n, n_layers, heads, hd = acts.shape
    X = acts.reshape(n, n_layers * heads, hd)  # (N, sites, head_dim)
    mean, _ = validation_accuracy(X, y, splits, params.C, params.seed, progress, progress_span)
    selected = []
    for site in np.argsort(-mean, kind="stable")[:n_select]:
        x = X[:, site].astype(np.float64)  # (N, head_dim)
        if params.direction == "mass_mean":
            theta = x[y == 1].mean(0) - x[y == 0].mean(0)
        else:
            theta = probe_weight(x, y, params.C)
        norm = np.linalg.norm(theta)
        if not np.isfinite(norm) or norm == 0.0:
            raise BadInput(f"head {divmod(int(site), heads)} has no direction: true and false activations coincide")
        theta = theta / norm
        sigma = float(np.std(x @ theta))
        layer, head = divmod(int(site), heads)
        selected.append({"layer": layer, "head": head, "accuracy": float(mean[site]), "sigma": sigma,
                         "direction": theta.astype(np.float32).tolist()})
    return mean.reshape(n_layers, heads), selected


def run(lm: LM, job: SteeringFitJob, ctx: Context) -> SteeringFitResult:
    progress, limits = ctx.progress, ctx.limits
    params: SteeringFitParams = job.params
    examples = job.input.examples
    n_layers, heads = lm.n_layers, lm.n_heads
    n_select = params.n_heads or default_n_heads(n_layers, heads)
    if n_select > n_layers * heads:
        raise BadInput(f"params.n_heads={n_select} is over the model's {n_layers * heads} heads")
    y = np.array([int(e.label) for e in examples])  # (N,)
    splits, described = make_splits(y, [e.group for e in examples], params)
    ids = [example_ids(lm, e, limits, i) for i, e in enumerate(examples)]
    acts = collect(lm, ids, "attn_head", None, "last", progress, (0.0, 0.4)).numpy()  # (N, layers, heads, head_dim)
    grid, selected = fit_heads(acts, y, params, n_select, splits, progress, (0.4, 1.0))
    data = {
        "method": "iti", "site": "attn_head", "position": "last",
        "n_layers": n_layers, "n_heads": heads, "head_dim": lm.head_dim,
        "heads": selected, "accuracy_grid": grid.tolist(), "chance": chance(y), "validation": described,
        "n_examples": len(examples), "n_true": int(y.sum()), "params": params.model_dump(mode="json"),
    }
    view = ctx.artifacts.put(ARTIFACT_KIND, lm.id, data)
    return SteeringFitResult(provenance=ctx.provenance(lm, job), 
        profile_id=view.id,
        heads=[SteeredHead(**{k: h[k] for k in ("layer", "head", "accuracy", "sigma")}) for h in selected],
        accuracy_grid=grid.tolist(), n_examples=len(examples), chance=chance(y), validation=described,
        direction=params.direction,
    )
