"""`probe`: validation accuracy of a linear probe at every layer (or layer and head).

Alain & Bengio 2016 (linear classifier probes); per-head probes as in Li et al. 2023 (ITI,
reference code `honest_llama/utils.py: train_probes`: `LogisticRegression(random_state=seed,
max_iter=1000)` per (layer, head) on the head output at the last token, one 80/20 split).

Where this differs from the reference code:
- k-fold cross-validation by default (`holdout` gives the reference's single split); folds are
  stratified by label and seeded, and the same folds score every site, so sites compare fairly.
- `group` keeps all examples of one group (e.g. the true and false answers to one question) on
  one side of every split; a random split of answers lets a probe recognise the question instead
  of the truth value, which inflates accuracy.
- features are standardised on each training fold (the residual stream has a few huge
  dimensions that stall L-BFGS); the probe's weight is mapped back to activation space.
- every (fold, site) probe is solved at once by batched Newton steps (`workers/numerics/logistic.py`,
  through `workers/numerics/probing.py`, which `steering_fit` shares),
  the same optimum as scikit-learn's `LogisticRegression(C)` on the standardised features
  (tested), and far faster than a loop of sklearn fits over every head and fold (BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np

from schemas.common import TextInput
from schemas.kinds.probe import ProbeJob, ProbeParams, ProbeResult, SiteAccuracy
from workers.context import Context
from workers.internals.activations import collect
from workers.internals.inputs import encode_prompt, resolve_indices
from workers.models.loading import LM
from workers.numerics.probing import chance, class_index, make_splits, validation_accuracy


def run(lm: LM, job: ProbeJob, ctx: Context) -> ProbeResult:
    progress, limits = ctx.progress, ctx.limits
    params: ProbeParams = job.params
    examples = job.input.examples
    classes, y = class_index([e.label for e in examples])
    splits, described = make_splits(y, [e.group for e in examples], params)
    layers = resolve_indices(params.layers, lm.n_layers, ["params", "layers"], "layers", "n_layers")
    ids = [encode_prompt(lm, TextInput(prompt=e.text), limits, ("input", "examples", i, "text")).ids
           for i, e in enumerate(examples)]
    acts = collect(lm, ids, params.site, layers, params.position, progress, (0.0, 0.5))  # (N, layers, [heads,] D)
    shape = acts.shape[1:-1]  # (layers,) or (layers, heads)
    X = acts.reshape(acts.shape[0], -1, acts.shape[-1]).numpy()  # (N, sites, D)
    mean, std = validation_accuracy(X, y, splits, params.C, params.seed, progress, (0.5, 1.0))
    mean_grid, std_grid = mean.reshape(shape), std.reshape(shape)
    best = []
    for flat in np.argsort(-mean, kind="stable")[: params.top]:
        pos = np.unravel_index(flat, shape)
        best.append(SiteAccuracy(layer=layers[int(pos[0])], head=int(pos[1]) if len(shape) == 2 else None,
                                 accuracy=float(mean[flat]), accuracy_std=float(std[flat])))
    return ProbeResult(provenance=ctx.provenance(lm, job), 
        site=params.site, position=params.position, layers=layers, classes=classes, n_examples=len(examples),
        chance=chance(y), validation=described, accuracy=mean_grid.tolist(), accuracy_std=std_grid.tolist(),
        best=best,
    )
