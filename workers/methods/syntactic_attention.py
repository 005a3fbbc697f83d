"""`syntactic_attention`: every head's attention read as a dependency parse, scored against gold
heads (Clark et al. 2019, "What Does BERT Look At? An Analysis of BERT's Attention", §4.2; their code:
github.com/clarkkev/attention-analysis), and the SAS score of Chen et al. 2023 ("Sudden Drops in the
Loss", §2.2): the best head's unlabeled attachment score.

Per sentence one forward under eager attention (workers/internals/capture.py `attention_parts`); for
each selected layer the (H, n, n) maps are reduced at once to word-level attention (sum over the
attended word's tokens, mean over the attending word's: workers/syntax/parse.py) and to each head's
predicted parent per direction (parent / child / both); only the counts are kept.

- UAS of a head in a direction = correct predictions / scored words (micro-average over sentences;
  scored words = every word but the roots). A head's UAS is the best of its three directions.
- SAS = the largest head UAS. Chen et al. take the UAS of the best head as the model's SAS; they
  study BERT (bidirectional), where the parent direction alone sees both sides. On a causal model a
  word's row sees only words to its left, so a right-pointing arc can only be read in the child
  direction (the parent, later in the sentence, attending back) — hence `both`.
- Per relation: each head's accuracy in each direction on the words of that relation, the `top_k`
  best (head, direction) pairs, and the best fixed-offset baseline (Clark et al. Table 1).
- Causal LMs: the same forward gives the loss on the sentences (mean next-token cross-entropy over
  every token after the first), so one job (or one sweep) gives both of Chen et al.'s curves.
Differences from the papers are listed in workers/syntax/parse.py and docs/checkpoints.md.
"""

from __future__ import annotations

import torch

from schemas.kinds.syntactic_attention import (
    DIRECTIONS,
    HeadScore,
    OffsetBaseline,
    RelationScores,
    SyntacticAttentionJob,
    SyntacticAttentionResult,
)
from workers.context import Context
from workers.errors import BadInput
from workers.internals.capture import attention_parts, forward
from workers.internals.inputs import resolve_indices
from workers.models.loading import LM
from workers.syntax.parse import OFFSETS, offset_predictions, predict, word_attention
from workers.syntax.words import align, membership


def run(lm: LM, job: SyntacticAttentionJob, ctx: Context) -> SyntacticAttentionResult:
    sentences = job.input.parsed()
    params = job.params
    n_layers = len(lm.layers)
    n_heads_total = lm.facts()["n_heads"]
    layers = resolve_indices(params.layers, n_layers, ["params", "layers"], "layers", "n_layers")
    heads = resolve_indices(params.heads, n_heads_total, ["params", "heads"], "heads", "n_heads")
    head_index = torch.tensor(heads)
    src = ["input", "conllu"] if job.input.conllu is not None else ["input", "sentences"]
    aligned = [align(lm, s.words, [*src, i]) for i, s in enumerate(sentences)]
    for i, a in enumerate(aligned):
        if len(a.ids) > ctx.limits.max_prompt_tokens:
            raise BadInput(f"sentence {i} is {len(a.ids)} tokens, over max_prompt_tokens={ctx.limits.max_prompt_tokens}")

    relations = sorted({r for s in sentences for r in s.relations or ()})
    rel_id = {r: k for k, r in enumerate(relations)}
    L, H, D, R = len(layers), len(heads), len(DIRECTIONS), len(relations)
    correct = torch.zeros(D, L, H, dtype=torch.long)  # per direction, layer, head
    rel_correct = torch.zeros(R, D, L, H, dtype=torch.long)
    rel_count = torch.zeros(R, dtype=torch.long)
    base_correct = torch.zeros(len(OFFSETS), dtype=torch.long)
    rel_base_correct = torch.zeros(R, len(OFFSETS), dtype=torch.long)
    n_words = n_tokens = 0
    causal = lm.spec.task == "causal_lm"
    loss_sum, loss_count = 0.0, 0

    hits: dict[int, torch.Tensor] = {}  # layer -> (D, H, n) bool, for the sentence in the forward
    now: dict = {}  # the sentence in the forward: members (n, t), gold (n,)

    def on_layer(layer: int, alpha: torch.Tensor, _v) -> None:
        w = word_attention(alpha.detach()[head_index.to(alpha.device)], now["members"])  # (H, n, n)
        pred = predict(w.cpu())
        hits[layer] = torch.stack([pred[d] == now["gold"] for d in DIRECTIONS])  # (D, H, n)

    # one eager-attention switch and one set of hooks for all sentences (switching costs more than a forward)
    with torch.no_grad(), attention_parts(lm, layers, on_layer, with_values=False):
        for si, (sent, al) in enumerate(zip(sentences, aligned)):
            n = len(sent.words)
            gold = torch.tensor(sent.heads) - 1  # (n,) 0-based parent; -1: root
            scored = gold >= 0  # (n,)
            rels = torch.tensor([rel_id[r] for r in sent.relations]) if sent.relations else None
            now.update(members=membership(al.word_of, n), gold=gold)  # members: (n, t)
            if causal:  # all logits: the loss on the sentence comes from the same forward
                ids = torch.tensor([al.ids], device=lm.device)  # (1, t)
                logits = lm.model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # (t-1, V)
                loss_sum += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
                loss_count += len(al.ids) - 1
            else:
                forward(lm, al.ids)
            for li, layer in enumerate(layers):
                h = hits.pop(layer) & scored  # (D, H, n)
                correct[:, li] += h.sum(-1)
                if rels is not None:
                    rel_correct[:, :, li].index_add_(0, rels, h.permute(2, 0, 1).long())  # (n, D, H) into (R, D, H)
            for oi, off in enumerate(OFFSETS):
                ok = (offset_predictions(n, off) == gold) & scored
                base_correct[oi] += ok.sum()
                if rels is not None:
                    rel_base_correct[:, oi].index_add_(0, rels, ok.long())
            if rels is not None:
                rel_count.index_add_(0, rels[scored], torch.ones(int(scored.sum()), dtype=torch.long))
            n_words += int(scored.sum())
            n_tokens += len(al.ids)
            ctx.progress((si + 1) / len(sentences))

    by_dir = correct.double() / n_words  # (D, L, H)
    best_dir = by_dir.max(0)  # values, indices: (L, H)
    uas = best_dir.values
    order = sorted(((float(uas[li, hi]), -li, -hi) for li in range(L) for hi in range(H)), reverse=True)
    ranked = [_score(layers, heads, -li, -hi, DIRECTIONS[int(best_dir.indices[-li, -hi])], s) for s, li, hi in order]
    rel_scores = []
    for r in sorted(range(R), key=lambda k: (-int(rel_count[k]), relations[k])):
        count = int(rel_count[r])
        if count == 0:
            continue
        acc = rel_correct[r].double() / count  # (D, L, H)
        flat = sorted(((float(acc[d, li, hi]), -li, -hi, -d) for d in range(D) for li in range(L) for hi in range(H)),
                      reverse=True)[:params.top_k]
        top = [_score(layers, heads, -li, -hi, DIRECTIONS[-d], s) for s, li, hi, d in flat]
        rel_scores.append(RelationScores(relation=relations[r], count=count, top=top,
                                         baseline=_baseline(rel_base_correct[r], count)))
    return SyntacticAttentionResult(
        provenance=ctx.provenance(lm, job), n_sentences=len(sentences), n_words=n_words, n_tokens=n_tokens,
        layers=layers, heads=heads, sas=ranked[0].score, best=ranked[0], uas=_grid(uas),
        uas_by_direction={d: _grid(by_dir[k]) for k, d in enumerate(DIRECTIONS)}, top_heads=ranked[:params.top_k],
        relations=rel_scores, baseline=_baseline(base_correct, n_words),
        loss=round(loss_sum / loss_count, 6) if causal and loss_count else None)


def _score(layers: list[int], heads: list[int], li: int, hi: int, direction: str, score: float) -> HeadScore:
    return HeadScore(layer=layers[li], head=heads[hi], direction=direction, score=round(score, 6))


def _grid(t: torch.Tensor) -> list[list[float]]:
    return [[round(float(x), 6) for x in row] for row in t]


def _baseline(correct: torch.Tensor, count: int) -> OffsetBaseline:
    k = int(torch.argmax(correct))  # ties: the first offset
    return OffsetBaseline(offset=OFFSETS[k], score=round(float(correct[k]) / count, 6))
