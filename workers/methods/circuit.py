"""`circuit`, task `ioi`: Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect
Object Identification in GPT-2 small" (reference code: redwoodresearch/Easy-Transformer,
`ioi_dataset.py` and the path-patching experiments), as one job.

Every stage is noising path patching (`workers.patching.path`): a head's output on the corrupted
(ABC) prompt is patched into the clean run along the paths into the stage's receivers only. Its
effect is the normalised change of the mean logit difference, (patched − clean) / (clean −
corrupted); negative means the head carries the answer.

1. Name movers: heads → logits at END (the head's direct effect). Effect ≤ −threshold: name
   mover; ≥ +threshold: negative name mover.
2. S-inhibition heads: heads → the name movers' queries at END.
3. Induction and duplicate-token heads: heads → the S-inhibition heads' keys and values at S2.
   Which of the two a head is comes from its attention: from S2 to S1+1 (induction) or to S1
   (duplicate token).
4. Previous-token heads: heads → the induction heads' keys at S1+1.
5. Faithfulness: F(C)/F(M), with every head outside the circuit ablated (`ablation`); C is the
   heads that carry IO (negative name movers are reported as a second figure). Knock-outs
   ablate one class at a time. Backup name movers are heads whose direct effect grows by
   threshold or more once the name movers are knocked out.

Where we differ: each stage keeps at most `max_heads_per_class` heads above the threshold, where
the paper picked them by hand. Path patching freezes every non-receiver component, MLPs included.
Under GQA a receiver's key or value is its KV head's, which its sibling query heads share. The
copy score reads the head's OV output at IO's position from that layer's real residual, not from
the first MLP's output of the name token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from schemas.common import FieldError, TextInput
from schemas.datasets import IoiPair
from schemas.kinds.circuit import (
    Behaviour,
    CircuitJob,
    CircuitParams,
    CircuitResult,
    Faithfulness,
    Graph,
    GraphEdge,
    GraphNode,
    HeadEvidence,
    Knockout,
)
from schemas.limits import Limits
from workers.context import Context
from workers.datasets.ioi import ioi_pairs
from workers.errors import BadInput
from workers.internals.capture import attention_parts, head_out_weights, kv_head_of, lens_logits
from workers.internals.hooks import capture_inputs, hooks
from workers.internals.inputs import encode_one_token, encode_prompt
from workers.models.loading import LM
from workers.patching.ablation import ablation_hooks
from workers.patching.exact import BaseRun, Counts, Metric, base_run, plain_metric, read_run, read_site
from workers.patching.path import Receiver, path_patched_metrics
from workers.patching.sites import site_of
from workers.progress import Progress

RELATIONS = ("end_to_io", "end_to_s2", "s2_to_s1", "s2_to_s1_plus_1", "s1_plus_1_to_s1")
Head = tuple[int, int]


@dataclass
class PairRun:
    pair: IoiPair
    clean: list[int]
    corrupt: list[int]
    metric: Metric
    base: BaseRun  # the clean run
    z_clean: dict[int, torch.Tensor]  # layer -> (T, H, head_dim)
    z_corrupt: dict[int, torch.Tensor]
    corrupted: float
    io_prob: float
    attention: torch.Tensor  # (relations, L, H)
    resid: dict[int, torch.Tensor]  # layer -> (T, d) entering it


def _token(lm: LM, text: str, loc: list[str | int]) -> int:
    return encode_one_token(lm, text, loc, "IOI compares single-token names")


def _prepare(lm: LM, pair: IoiPair, k: int, limits: Limits, counts: Counts) -> PairRun:
    loc: list[str | int] = ["input", "pairs", k]
    clean = encode_prompt(lm, TextInput(prompt=pair.clean_prompt), limits, (*loc, "clean_prompt")).ids
    corrupt = encode_prompt(lm, TextInput(prompt=pair.corrupted_prompt), limits, (*loc, "corrupted_prompt")).ids
    p = pair.positions
    if len(clean) != len(corrupt) or min(p.io, p.s1, p.s2) < 0 or max(p.io, p.s2, p.s1 + 1) >= len(clean):
        msg = f"pair {k}: prompts of {len(clean)} and {len(corrupt)} tokens, or positions outside the prompt"
        raise BadInput(msg, [FieldError(loc=loc, msg=msg, type="length_mismatch")])
    metric = Metric(_token(lm, pair.answer, [*loc, "answer"]), _token(lm, pair.wrong_answer, [*loc, "wrong_answer"]))
    L = len(lm.layers)
    site = site_of(lm, "attn_head")
    base = base_run(lm, clean, metric, counts)
    z_clean = read_site(lm, site, clean, list(range(L)), counts)
    z_corrupt, corrupted = read_run(lm, site, corrupt, list(range(L)), metric, counts)
    attention = torch.zeros(len(RELATIONS), L, site.units)
    end = len(clean) - 1
    cells = [(end, p.io), (end, p.s2), (p.s2, p.s1), (p.s2, p.s1 + 1), (p.s1 + 1, p.s1)]

    def on_layer(layer: int, alpha: torch.Tensor, v) -> None:  # alpha: (H, T, T)
        for r, (q, key) in enumerate(cells):
            attention[r, layer] = alpha[:, q, key].float()

    with torch.no_grad(), attention_parts(lm, list(range(L)), on_layer, with_values=False), \
            capture_inputs(dict(enumerate(lm.layers))) as resid:
        logits = lm.model(input_ids=torch.tensor([clean], device=lm.device), use_cache=False, logits_to_keep=1).logits
    counts.forwards += 1
    io_prob = float(torch.softmax(logits[0, -1].float(), -1)[metric.answer])
    return PairRun(pair, clean, corrupt, metric, base, z_clean, z_corrupt, corrupted, io_prob, attention,
                   {i: t[0].detach() for i, t in resid.items()})


def _path_effects(lm: LM, runs: list[PairRun], senders: list[Head], receivers_of, counts: Counts, f_clean: float,
                  spread: float, progress: Progress, extra=None) -> torch.Tensor:
    """(len(senders),) normalised effect of each sender along its paths into the receivers, mean over pairs."""
    total = torch.zeros(len(senders), dtype=torch.float64)
    for k, run in enumerate(runs):
        base, z_clean, z_corrupt = run.base, run.z_clean, run.z_corrupt
        if extra is not None:  # e.g. the name movers knocked out: every run of this pair under those hooks
            forward, pre = extra(run)
            with hooks(forward=forward, pre=pre):
                base = base_run(lm, run.clean, run.metric, counts)
                layers = list(range(len(lm.layers)))
                z_clean = read_site(lm, site_of(lm, "attn_head"), run.clean, layers, counts)
                z_corrupt = read_site(lm, site_of(lm, "attn_head"), run.corrupt, layers, counts)
        total += path_patched_metrics(lm, senders, receivers_of(run), base, z_clean, z_corrupt, run.metric,
                                      counts).double()
        progress((k + 1) / len(runs))
    return (total / len(runs) - f_clean) / spread


def _pick(effects: torch.Tensor, senders: list[Head], threshold: float, k: int, sign: int = -1,
          exclude: set[Head] = frozenset()) -> list[tuple[Head, float]]:
    ranked = sorted(((float(e), h) for e, h in zip(effects, senders) if sign * e >= threshold and h not in exclude),
                    key=lambda t: -sign * t[0])
    return [(h, e) for e, h in ranked[:k]]


def _receivers(heads: list[Head], site: str, position: str, kv: torch.Tensor):
    """receivers_of(run) for the given heads: their q (query heads) or k/v (their KV heads) at one position."""
    by_layer: dict[int, set[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, set()).add(int(kv[h]) if site in ("k", "v") else h)

    def of(run: PairRun) -> list[Receiver]:
        p = run.pair.positions
        at = {"end": len(run.clean) - 1, "s2": p.s2, "s1_plus_1": p.s1 + 1}[position]
        return [Receiver(site, layer, tuple(sorted(units)), (at,)) for layer, units in by_layer.items()]
    return of


def _copy_score(lm: LM, runs: list[PairRun], head: Head) -> float:
    """Share of pairs whose IO is in the top 5 of the head's OV output at the IO position."""
    layer, h = head
    block = lm.layers[layer]
    v_site = site_of(lm, "head_value")
    g = int(kv_head_of(lm)[h])
    w_o = head_out_weights(lm, layer)[h]  # (head_dim, d)
    hits = 0
    with torch.no_grad():
        for run in runs:
            x = run.resid[layer][run.pair.positions.io]  # (d,)
            v = block.get_submodule(lm.arch.v_proj).forward(block.get_submodule(lm.arch.attn_norm).forward(x))
            v = v[v_site.offset + g * v_site.width: v_site.offset + (g + 1) * v_site.width]  # (head_dim,)
            top = torch.topk(lens_logits(lm, (v @ w_o)[None]), 5).indices[0]
            hits += int(run.metric.answer in top.tolist())
    return hits / len(runs)


def _ablation_value(params: CircuitParams, runs: list[PairRun]):
    """run -> the value an ablated head takes on that pair (None: zero)."""
    if params.ablation == "zero":
        return lambda run: None
    if params.ablation == "resample":
        return lambda run: run.z_corrupt
    means: dict[int, dict[int, torch.Tensor]] = {}
    for template in {r.pair.template for r in runs}:
        group = [r for r in runs if r.pair.template == template]
        means[template] = {layer: torch.stack([r.z_corrupt[layer] for r in group]).mean(0) for layer in group[0].z_corrupt}
    return lambda run: means[run.pair.template]


def _mean_metric(lm: LM, runs: list[PairRun], ablated: list[Head], value_of, counts: Counts) -> float:
    total = 0.0
    for run in runs:
        forward, pre = ablation_hooks(lm, ablated, value_of(run))
        with hooks(forward=forward, pre=pre):
            total += plain_metric(lm, run.clean, run.metric, counts)
    return total / len(runs)


def _name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def run(lm: LM, job: CircuitJob, ctx: Context) -> CircuitResult:
    progress, limits = ctx.progress, ctx.limits
    params: CircuitParams = job.params
    pairs = job.input.pairs or ioi_pairs(lm, job.input.dataset)
    counts = Counts()
    runs = []
    for k, pair in enumerate(pairs):
        runs.append(_prepare(lm, pair, k, limits, counts))
        progress(0.2 * (k + 1) / len(pairs))
    L, H = len(lm.layers), site_of(lm, "attn_head").units
    kv = kv_head_of(lm)
    f_clean = sum(r.base.metric for r in runs) / len(runs)
    f_corrupt = sum(r.corrupted for r in runs) / len(runs)
    spread = f_clean - f_corrupt
    if abs(spread) < 1e-6 or abs(f_clean) < 1e-6:
        raise BadInput(f"nothing to trace: the clean logit difference is {f_clean:.4g} and the corrupted "
                       f"{f_corrupt:.4g}; the model does not do this task on these prompts")
    attention = torch.stack([r.attention for r in runs]).mean(0)  # (relations, L, H)
    everyone = [(layer, h) for layer in range(L) for h in range(H)]
    thr, cap = params.threshold, params.max_heads_per_class

    def stage(lo: float, hi: float):
        return lambda fraction: progress(lo + (hi - lo) * fraction)

    def evidence(head: Head, role: str, effect: float, copy: bool = False) -> HeadEvidence:
        att = {rel: float(attention[r, head[0], head[1]]) for r, rel in enumerate(RELATIONS)}
        return HeadEvidence(id=_name(head), layer=head[0], head=head[1], role=role, path_effect=effect, attention=att,
                            copy_score=_copy_score(lm, runs, head) if copy else None)

    def logits_receiver(run: PairRun) -> list[Receiver]:
        return [Receiver("logits", L, positions=(len(run.clean) - 1,))]

    direct = _path_effects(lm, runs, everyone, logits_receiver, counts, f_clean, spread, stage(0.2, 0.3))
    movers = _pick(direct, everyone, thr, cap)
    negative = _pick(direct, everyone, thr, cap, sign=+1)
    classed: dict[Head, str] = {h: "name_mover" for h, _ in movers} | {h: "negative_name_mover" for h, _ in negative}
    heads = [evidence(h, "name_mover", e, copy=True) for h, e in movers]
    heads += [evidence(h, "negative_name_mover", e, copy=True) for h, e in negative]
    edges = [GraphEdge(source=_name(h), target="logits", via="logits", effect=e) for h, e in movers + negative]

    stages = [  # (receiver role, sender role(s), receiver site, position, progress span)
        ("name_mover", "s_inhibition", ("q",), "end", (0.3, 0.45)),
        ("s_inhibition", "induction", ("k", "v"), "s2", (0.45, 0.65)),
        ("induction", "previous_token", ("k",), "s1_plus_1", (0.65, 0.8)),
    ]
    for receiver_role, role, sites, position, span in stages:
        targets = [h for h, r in classed.items() if r == receiver_role]
        if not targets:
            continue
        senders = [h for h in everyone if h[0] < max(t[0] for t in targets)]
        parts = [_receivers(targets, s, position, kv) for s in sites]
        effects = _path_effects(lm, runs, senders, lambda run: [r for part in parts for r in part(run)], counts,
                                f_clean, spread, stage(*span))
        for head, effect in _pick(effects, senders, thr, cap, exclude=set(classed)):
            if role == "induction":  # S2 → S1+1 rather than S2 → S1 tells induction from duplicate-token heads
                a = attention[RELATIONS.index("s2_to_s1_plus_1"), head[0], head[1]]
                b = attention[RELATIONS.index("s2_to_s1"), head[0], head[1]]
                named = "induction" if a >= b else "duplicate_token"
            else:
                named = role
            classed[head] = named
            heads.append(evidence(head, named, effect))
            edges += [GraphEdge(source=_name(head), target=_name(t), via="kv" if len(sites) == 2 else sites[0],
                                effect=effect) for t in targets]

    value_of = _ablation_value(params, runs)
    circuit = [h for h, r in classed.items() if r != "negative_name_mover"]
    f_circuit = _mean_metric(lm, runs, [h for h in everyone if h not in circuit], value_of, counts)
    f_negative = _mean_metric(lm, runs, [h for h in everyone if h not in classed], value_of, counts)
    f_empty = _mean_metric(lm, runs, everyone, value_of, counts)
    progress(0.85)
    knockouts = []
    for role in dict.fromkeys(classed.values()):
        group = [h for h, r in classed.items() if r == role]
        f = _mean_metric(lm, runs, group, value_of, counts)
        knockouts.append(Knockout(role=role, heads=[_name(h) for h in group], logit_diff=f, drop=1 - f / f_clean))

    backups: list[HeadEvidence] = []
    mover_heads = [h for h, r in classed.items() if r == "name_mover"]
    if mover_heads:
        def knocked_out(run: PairRun):
            return ablation_hooks(lm, mover_heads, value_of(run))
        after = _path_effects(lm, runs, everyone, logits_receiver, counts, f_clean, spread, stage(0.9, 1.0),
                              extra=knocked_out)
        grown = after - direct
        backups = [evidence(h, "backup_name_mover", float(after[everyone.index(h)]), copy=True)
                   for h, _ in _pick(grown, everyone, thr, cap, exclude=set(mover_heads))]

    nodes = [GraphNode(id=_name(h), layer=h[0], head=h[1], role=r) for h, r in classed.items()]
    nodes.append(GraphNode(id="logits", role="logits"))
    return CircuitResult(provenance=ctx.provenance(lm, job), 
        pairs=pairs,
        behaviour=Behaviour(logit_diff=f_clean, corrupted_logit_diff=f_corrupt,
                            io_above_s=sum(r.base.metric > 0 for r in runs) / len(runs),
                            io_prob=sum(r.io_prob for r in runs) / len(runs)),
        direct_effects=direct.view(L, H).tolist(), heads=heads, backup_heads=backups,
        faithfulness=Faithfulness(ablation=params.ablation, model=f_clean, circuit=f_circuit, empty=f_empty,
                                  ratio=f_circuit / f_clean, with_negative=f_negative / f_clean, n_heads=len(circuit),
                                  share_of_heads=len(circuit) / (L * H)),
        knockouts=knockouts, graph=Graph(nodes=nodes, edges=edges),
        forwards=counts.forwards, positions_computed=counts.positions, positions_naive=counts.naive,
    )
