"""`icl_anchors`: label words are anchors of in-context learning (Wang et al. 2023, "Label Words are
Anchors: An Information Flow Perspective for Understanding In-Context Learning", EMNLP; reference code
lancopku/label-words-are-anchors).

1. Information flow (§2.1): per layer, I_l = |Σ_h A_{h,l} ⊙ ∂L/∂A_{h,l}| with L the cross-entropy of
   the label words' logits at the target, and S_wp, S_pq, S_ww, the mean of I_l over text → label-word
   pairs, label-word → target pairs and all other pairs j < i (`attention_attr.py`, `get_proportion`),
   averaged over the first `flow_queries` queries.
2. Deep layers (§2.3): over the queries, the target's attention on each label's words (Σ heads,
   Σ demonstrations of the label) per layer, its AUC-ROC as a predictor of the model's own answer, and
   R_l = Σ_{i≤l}(AUC_i − ½) / Σ_i(AUC_i − ½) (`deep_analysis.ipynb`).
3. Anchor re-weighting (§3.1): the target's attention on label word j in layer l, head h × exp(β_{l,h,c(j)}),
   β learnt by Adam (lr 0.1, 10 epochs, batch 1: the reference's `ReweightingArgs`) on `fit_examples`
   with the demonstrations as context; accuracy on the queries before and after; β stored as an
   `anchors` artifact.

Where we differ: the reference learns one β per demonstration (its runs use one demonstration per
class, so per label); we learn one per label, shared by the label's demonstrations, so a profile fits
any number of demonstrations per class. The reference's model is GPT-2 XL / GPT-J and its prompts have
one demonstration per class; here any causal LM of the registry and any demonstrations. The loss of
the flows is against the gold label where the query has one (`params.loss`), as the reference's
`attention_attr.py`; its S_pq/S_wp/S_ww counts are the reference's (diagonal excluded). Prompts that
share the demonstrations run their prefix once (KV cache): neither the AUC nor the re-weighting
changes the prefix, so this is exact.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from schemas.common import ResultWarning
from schemas.kinds.icl_anchors import (
    Auc,
    Flows,
    IclAnchorsJob,
    IclAnchorsResult,
    LabeledText,
    Prediction,
    Query,
    Reweighting,
)
from schemas.limits import over
from workers.anchors.core import (
    PrefixRunner,
    auc_per_layer,
    cumulative_share,
    fit_beta,
    flow_means,
    reweight_edit,
    saliency,
    target_attention,
)
from workers.anchors.prompts import Prompt, Task, marked_prompt, query_prompt, task_of
from workers.context import Context
from workers.errors import BadInput
from workers.models.loading import LM

ARTIFACT_KIND = "anchors"


def analyses_of(job: IclAnchorsJob) -> list[str]:
    if job.params.analyses is not None:
        return list(job.params.analyses)
    inp = job.input
    out = ["flows"]
    if inp.prompt is None and len(inp.all_queries) >= 2:
        out.append("auc")
    if inp.fit_examples is not None:
        out.append("reweighting")
    return out


def _predictions(task: Task, z: torch.Tensor, prompts: list[Prompt]) -> list[Prediction]:
    probs = torch.softmax(z.double(), -1)  # (Q, C)
    return [Prediction(predicted=task.labels[int(p.argmax())],
                       gold=task.labels[pr.gold] if pr.gold is not None else None,
                       probs={k: float(v) for k, v in zip(task.labels, p)}) for p, pr in zip(probs, prompts)]


def _accuracy(z: torch.Tensor, prompts: list[Prompt]) -> float | None:
    labelled = [(int(row.argmax()), p.gold) for row, p in zip(z, prompts) if p.gold is not None]
    return sum(a == b for a, b in labelled) / len(labelled) if labelled else None


def _mean_loss(z: torch.Tensor, gold: list[int]) -> float:
    return float(F.cross_entropy(z.double(), torch.tensor(gold)))


def run(lm: LM, job: IclAnchorsJob, ctx: Context) -> IclAnchorsResult:
    inp, params, limits = job.input, job.params, ctx.limits
    analyses = analyses_of(job)
    if "reweighting" in analyses and inp.fit_examples is not None:
        steps = params.epochs * -(-len(inp.fit_examples) // params.batch_size)
        if steps > limits.max_steps:
            err = over(["params", "epochs"], steps, "max_steps", limits.max_steps)
            raise BadInput(err.msg, [err])
    task = task_of(lm, inp)
    warnings: list[ResultWarning] = []
    if inp.prompt is not None:
        prompts = [marked_prompt(lm, inp, task, limits)]
    else:
        loc = ["input", "queries"] if inp.queries is not None else ["input", "query"]
        prompts = [query_prompt(lm, inp, task, inp.demonstrations, q, loc + ([i] if inp.queries else []), limits)
                   for i, q in enumerate(inp.all_queries)]
    fit: list[Prompt] = []
    if "reweighting" in analyses:
        fit = [query_prompt(lm, inp, task, inp.demonstrations, Query(text=e.text, label=e.label),
                            ["input", "fit_examples", i], limits) for i, e in enumerate(inp.fit_examples or [])]
    everything = prompts + fit
    if any(p.label_positions != everything[0].label_positions for p in everything):
        raise BadInput("the demonstrations tokenize differently in front of different queries; end the template "
                       "with a separator (a newline) so the label words keep their positions")
    if not everything[0].label_positions:
        raise BadInput("the prompt has no label words")
    spans = {"flows": 0.5, "auc": 0.2, "reweighting": 0.3}
    total = sum(spans[a] for a in analyses) + 0.05
    at = 0.0

    def span(name: str):
        nonlocal at
        start, width = at, spans.get(name, 0.05) / total
        at += width
        return lambda f: ctx.progress(min(1.0, start + width * f))

    # predictions (and the target's attention on the label words) for every query
    runner = PrefixRunner(lm, everything, task.label_ids)
    query_rows = list(range(len(prompts)))
    scores, z = target_attention(runner, query_rows, len(task.labels), span("predict"))  # (Q, L, C), (Q, C)
    predicted = z.argmax(-1).numpy()
    result_auc = None
    if "auc" in analyses:
        try:
            auc, n_present = auc_per_layer(scores.numpy(), predicted)
            r = cumulative_share(auc)
            if r is None:
                warnings.append(ResultWarning(type="r-undefined", detail="Σ(AUC_l − 0.5) is 0: R_l is undefined"))
            counts = {k: int((predicted == c).sum()) for c, k in enumerate(task.labels)}
            result_auc = Auc(auc=auc, r=r, n_queries=len(prompts), classes_predicted=n_present, counts=counts)
        except ValueError:
            warnings.append(ResultWarning(
                type="auc-undefined", detail="the model gives the same answer to every query: the AUC of the "
                "attention as a predictor of its answer is undefined", ctx={"predicted": task.labels[int(predicted[0])]}))
    # information flow
    flows = None
    if "flows" in analyses:
        progress = span("flows")
        n = min(params.flow_queries, len(prompts))
        per = np.zeros((n, len(lm.layers), 3))
        for k, p in enumerate(prompts[:n]):
            label = p.gold if params.loss == "gold" else None
            maps, _ = saliency(lm, p.ids, task.label_ids, label)
            per[k] = [flow_means(m, p.label_positions, p.target) for m in maps]
            progress((k + 1) / n)
        mean = per.mean(0)  # (L, 3)
        flows = Flows(s_wp=mean[:, 0].tolist(), s_pq=mean[:, 1].tolist(), s_ww=mean[:, 2].tolist(), n_queries=n,
                      loss=params.loss)
    # anchor re-weighting
    reweighting = None
    if "reweighting" in analyses:
        progress = span("reweighting")
        fit_rows = list(range(len(prompts), len(everything)))
        gold_fit = [p.gold for p in fit]
        beta, history = fit_beta(runner, fit_rows, gold_fit, len(task.labels), epochs=params.epochs, lr=params.lr,
                                 batch_size=params.batch_size, seed=params.seed, renormalize=params.renormalize,
                                 progress=lambda f: progress(0.9 * f))
        first = prompts[0]
        cols = torch.tensor(first.label_positions, device=lm.device)
        classes = torch.tensor(first.label_classes, device=lm.device)
        after = torch.zeros_like(z)
        with torch.no_grad():
            for batch in runner.batches(query_rows):
                edit = reweight_edit(beta, cols, classes, runner.targets(batch), params.renormalize)
                after[batch[0]:batch[-1] + 1] = runner.forward(batch, edit=edit).cpu()
        gold = [p.gold for p in prompts]
        more = None
        if params.compare_more_demos:
            demos = list(inp.demonstrations or []) + [LabeledText(text=e.text, label=e.label) for e in inp.fit_examples or []]
            try:
                more_prompts = [query_prompt(lm, inp, task, demos, q, ["input", "fit_examples"], limits)
                                for q in inp.all_queries]
            except BadInput as e:  # the longer prompts are over max_prompt_tokens: the comparison only is skipped
                warnings.append(ResultWarning(type="more-demos-skipped", detail=f"with the fit examples as "
                                              f"demonstrations: {e.detail}"))
            else:
                more_runner = PrefixRunner(lm, more_prompts, task.label_ids)
                with torch.no_grad():
                    zm = torch.cat([more_runner.forward(b).cpu() for b in more_runner.batches(query_rows)])
                more = _accuracy(zm, more_prompts)
        progress(1.0)
        data = {
            "method": "anchor_reweighting", "n_layers": len(lm.layers), "n_heads": int(beta.shape[1]),
            "labels": task.labels, "label_words": dict(inp.label_words), "label_token_ids": task.label_ids,
            "template": inp.template,
            # the tokens just before a label word (the end of the template's text before `{label}`): a
            # later job finds label words and the target by them, as the reference's `prefix_idxs`
            "slot_token_ids": first.ids[first.label_positions[0] - 2:first.label_positions[0]],
            "beta": beta.cpu().tolist(), "renormalize": params.renormalize,
            "accuracy_before": _accuracy(z, prompts), "accuracy_after": _accuracy(after, prompts),
            "n_fit": len(fit), "params": params.model_dump(mode="json"),
        }
        view = ctx.artifacts.put(ARTIFACT_KIND, lm.id, data)
        reweighting = Reweighting(
            anchors_id=view.id, accuracy_before=_accuracy(z, prompts), accuracy_after=_accuracy(after, prompts),
            accuracy_more_demos=more, loss_before=_mean_loss(z, gold), loss_after=_mean_loss(after, gold),
            fit_loss=history, beta=beta.cpu().tolist(), predictions_after=_predictions(task, after, prompts),
            n_fit=len(fit))
    warnings += [ResultWarning(type="label-token-mismatch", detail=w) for w in task.warnings]
    first = prompts[0]
    ctx.progress(1.0)
    return IclAnchorsResult(
        provenance=ctx.provenance(lm, job), warnings=warnings, labels=task.labels,
        label_tokens=lm.token_strings(task.label_ids), n_layers=len(lm.layers), n_heads=lm.facts()["n_heads"],
        tokens=lm.token_strings(first.ids), label_positions=first.label_positions, target_position=first.target,
        flows=flows, predictions=_predictions(task, z, prompts), accuracy=_accuracy(z, prompts), auc=result_auc,
        reweighting=reweighting,
    )
