"""`head_redundancy`: redundant attention heads and head importance.

- Redundancy, after Bian et al. 2021 ("On Attention Redundancy: A Comprehensive Study", NAACL): a
  head × head distance matrix averaged over the texts (`workers.heads.distances`: token-level
  Jensen-Shannon or Hellinger distance of the attention rows, or sentence-level 1 − correlation of the
  heads' outputs), average-linkage clusters cut at `threshold`, and a redundancy score per head,
  1 − the distance to its nearest other head (`workers.heads.clustering`). The paper studies BERT-base
  on GLUE with several distance functions and reads the clusters off the heat map; it names no
  per-head score, so this one is ours.
- Importance, after Michel et al. 2019 ("Are Sixteen Heads Really Better than One?", §4.1 eq. 2):
  I_h = E_x |∂L(x)/∂ξ_h| at ξ = 1, ξ_h gating head h's output (`workers.heads.masking`), and the exact
  loss with the head masked. Michel et al. normalise I_h per layer (ℓ2) before ranking across layers;
  we report the raw mean and rank the pruning order by it unnormalised (documented). The exact masked
  losses are real forwards, one row per (head, text), many rows per forward, each starting at the
  masked head's layer from the unmasked run's residual stream (LLaMA-like models).
- Pruning: the heads in importance order (least important first), the longest prefix whose joint
  masking keeps the loss within `tolerance`, found by binary search over the prefix length with a real
  masked run per step; Michel et al. prune by a fixed percentage per step instead.

Encoders (the bundled MiniLM has no MLM head) use the embedding drift of the mean-pooled last hidden
state as the loss; its gradient at ξ = 1 is zero (a minimum), so encoders get exact importance only.
"""

from __future__ import annotations

import torch

from schemas.common import FieldError, TextInput
from schemas.facts import Facts
from schemas.kinds.head_redundancy import (
    HeadRedundancyJob,
    HeadRedundancyParams,
    HeadRedundancyResult,
    HeadScore,
    Pruning,
    RandomControl,
)
from workers.context import Context
from workers.errors import BadInput
from workers.heads import clustering, distances, masking
from workers.internals.inputs import encode_one_token, encode_prompt, resolve_indices
from workers.models.loading import LM
from workers.patching.exact import Counts
from workers.progress import Progress

MATRIX_DECIMALS = 6
BYTES_PER_ENTRY = 10  # a distance in the JSON result with MATRIX_DECIMALS decimals and its separator


def _part(progress: Progress, lo: float, hi: float) -> Progress:
    return lambda f: progress(lo + (hi - lo) * f)


def random_texts(lm: LM, texts: list[list[int]], seed: int) -> list[list[int]]:
    """Token sequences of the same lengths as `texts`, each non-special token replaced by one drawn
    uniformly from the vocabulary's non-special tokens (special tokens kept where they are)."""
    special = set(lm._special_ids)
    vocab = torch.tensor([i for i in range(lm.embed.weight.shape[0]) if i not in special])
    g = torch.Generator().manual_seed(seed)
    out = []
    for ids in texts:
        draw = vocab[torch.randint(len(vocab), (len(ids),), generator=g)].tolist()
        out.append([i if i in special else d for i, d in zip(ids, draw)])
    return out


def _encode(lm: LM, job: HeadRedundancyJob, ctx: Context, objective: str) -> tuple[list[list[int]], list[int] | None]:
    ids = [encode_prompt(lm, TextInput(prompt=t), ctx.limits, ("input", "texts", k)).ids
           for k, t in enumerate(job.input.texts)]
    least = 2 if objective == "lm_loss" else 1
    for k, i in enumerate(ids):
        if len(i) < least:
            msg = f"text {k} is {len(i)} token; the LM loss needs at least 2"
            raise BadInput(msg, [FieldError(loc=["input", "texts", k], msg=msg, type="too_short")])
    targets = None
    if job.input.targets is not None:
        targets = [encode_one_token(lm, t, ["input", "targets", k], "a target is the next token after its text")
                   for k, t in enumerate(job.input.targets)]
    return ids, targets


def run(lm: LM, job: HeadRedundancyJob, ctx: Context) -> HeadRedundancyResult:
    params: HeadRedundancyParams = job.params
    progress = ctx.progress
    task = lm.spec.task
    errors = list(job.over_facts(Facts.of(lm.facts())))
    if errors:
        raise BadInput(errors[0].msg, errors)
    importances = params.importances(task)
    L, H = len(lm.layers), masking.n_units(lm)
    layers = resolve_indices(params.layers, L, ["params", "layers"], "layers", "n_layers")
    heads = [(layer, h) for layer in layers for h in range(H)]
    N = len(heads)
    if N < 2:
        msg = f"{N} head selected; redundancy compares heads: select layers with at least two heads in all"
        raise BadInput(msg, [FieldError(loc=["params", "layers"], msg=msg, type="too_few_heads")])
    if (size := N * N * BYTES_PER_ENTRY) > ctx.limits.max_result_bytes:
        fit = max(1, int((ctx.limits.max_result_bytes / BYTES_PER_ENTRY) ** 0.5) // H)
        msg = (f"{N} heads make a {N}×{N} matrix of about {size} bytes, over max_result_bytes="
               f"{ctx.limits.max_result_bytes}; select at most {fit} layers")
        raise BadInput(msg, [FieldError(loc=["params", "layers"], msg=msg, type="result_too_large",
                                        ctx={"max_layers": fit})])
    objective = "embedding_drift" if task == "encoder" else ("target_loss" if job.input.targets else "lm_loss")
    ids, targets = _encode(lm, job, ctx, objective)
    counts = Counts()

    # -- redundancy: the distance matrix, its clusters, each head's nearest neighbour -------------------------
    d = distances.distance_matrix(lm, ids, heads, params.distance, _part(progress, 0.0, 0.15))
    counts.forwards += len(ids)
    labels = clustering.cluster_labels(d, params.threshold)
    groups, cluster = clustering.clusters_of(labels)
    near, near_d = clustering.nearest(d)
    control = None
    if params.random_control:
        rand = random_texts(lm, ids, params.seed)
        d_rand = distances.distance_matrix(lm, rand, heads, params.distance, _part(progress, 0.15, 0.25))
        counts.forwards += len(rand)
        labels_rand = clustering.cluster_labels(d_rand, params.threshold)
        r, ari = clustering.agreement(d, d_rand, labels, labels_rand)
        groups_rand, _ = clustering.clusters_of(labels_rand)
        control = RandomControl(matrix_correlation=r, adjusted_rand=ari, n_clusters=len(groups_rand),
                                clustered_heads=sum(len(g) for g in groups_rand))

    # -- importance -------------------------------------------------------------------------------------------
    texts = masking.Texts(ids, lm.tokenizer.pad_token_id or 0)
    obj = masking.Objective(objective, targets)
    need_runs = "exact" in importances or params.prune
    base = masking.base_run(lm, texts, obj, counts, keep_resid=need_runs, progress=_part(progress, 0.25, 0.28))
    base_loss, base_acc = base.loss(), base.accuracy()
    grad = None
    if "gradient" in importances:
        g = masking.mask_gradients(lm, texts, heads, obj, counts, _part(progress, 0.28, 0.33))
        grad = g.abs().mean(0).tolist()  # Michel et al.: E_x |∂L(x)/∂ξ_h|
    exact_loss = exact_acc = None
    if "exact" in importances:
        exact_loss, exact_acc = masking.head_losses(lm, texts, heads, obj, counts, _part(progress, 0.33, 0.9))

    pruning = None
    if params.prune:
        pruning = _prune(lm, texts, obj, counts, heads, params, base_loss, base_acc, grad, exact_loss)
    progress(1.0)

    iu = [[round(float(x), MATRIX_DECIMALS) for x in row] for row in d.tolist()]
    scores = [HeadScore(
        layer=layer, head=h, cluster=cluster[i], nearest=list(heads[near[i]]), nearest_distance=near_d[i],
        redundancy=1.0 - near_d[i], gradient_importance=None if grad is None else grad[i],
        masked_loss=None if exact_loss is None else exact_loss[i],
        loss_change=None if exact_loss is None else exact_loss[i] - base_loss,
        masked_accuracy=None if exact_acc is None or targets is None else exact_acc[i],
    ) for i, (layer, h) in enumerate(heads)]
    return HeadRedundancyResult(
        provenance=ctx.provenance(lm, job), metric=objective, n_texts=len(ids),
        n_tokens=sum(len(i) for i in ids), base_loss=base_loss, base_accuracy=base_acc if targets else None,
        distance=params.distance, threshold=params.threshold, heads=[list(h) for h in heads], matrix=iu,
        clusters=[[list(heads[i]) for i in g] for g in groups], scores=scores, pruning=pruning,
        random_control=control, forwards=counts.forwards, masked_rows=_masked_rows(len(ids), N, importances, pruning),
    )


def _masked_rows(K: int, N: int, importances: list[str], pruning: Pruning | None) -> int:
    rows = K * N if "exact" in importances else 0
    return rows + (K * pruning.evaluations if pruning is not None else 0)


def _prune(lm: LM, texts: masking.Texts, obj: masking.Objective, counts: Counts, heads: list[tuple[int, int]],
           params: HeadRedundancyParams, base_loss: float, base_acc: float, grad: list[float] | None,
           exact_loss: list[float] | None) -> Pruning:
    """The longest prefix of the heads in importance order (least important first) whose joint masking
    keeps the criterion within tolerance, by binary search with a real masked run per step."""
    key = exact_loss if params.prune_by == "exact" else grad
    assert key is not None
    order = sorted(range(len(heads)), key=lambda i: (key[i], i))
    seen: dict[int, tuple[float, float]] = {0: (base_loss, base_acc)}

    def measure(k: int) -> tuple[float, float]:
        if k not in seen:
            seen[k] = masking.joint_loss(lm, texts, {heads[i]: 0.0 for i in order[:k]}, obj, counts)
        return seen[k]

    def acceptable(k: int) -> bool:
        loss, acc = measure(k)
        if params.prune_on == "accuracy":
            return acc >= base_acc * (1 - params.tolerance) - 1e-12
        if obj.kind == "embedding_drift":
            return loss <= params.tolerance
        return loss <= base_loss * (1 + params.tolerance)

    k, failed, evaluations = clustering.largest_prefix(len(heads), acceptable)
    loss_after, acc_after = measure(k)
    change = loss_after if obj.kind == "embedding_drift" else (loss_after - base_loss) / base_loss
    targets = obj.targets is not None
    return Pruning(
        order=params.prune_by, criterion=params.prune_on, tolerance=params.tolerance,
        heads=[list(heads[i]) for i in order[:k]], n_heads=k, fraction=k / len(heads), loss_before=base_loss,
        loss_after=loss_after, relative_change=change, accuracy_before=base_acc if targets else None,
        accuracy_after=acc_after if targets else None, next_loss=None if failed is None else measure(failed)[0],
        evaluations=evaluations,
    )

