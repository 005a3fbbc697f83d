"""`ffn_projection`: FFN sub-updates in the vocabulary (Geva et al. 2022, "Transformer Feed-Forward
Layers Build Predictions by Promoting Concepts in the Vocabulary Space"; reference implementation
github.com/mega002/ff-layers).

An FFN's output at a position is Σ_i m_i v_i (+ b): m_i is the input of the output projection
(LLaMA: act(gate(x))·up(x); GPT-2 and BERT: the activation), v_i row i of that projection read as
an (in, out) matrix. The score |m_i|·‖v_i‖ ranks sub-updates (the paper uses m_i·‖v_i‖ on GPT-2,
whose GELU coefficients are mostly positive; SwiGLU coefficients take both signs).

Projection to the vocabulary, where the reference repositories differ: the paper's code projects
v_i with the output embedding alone (E v_i); Dar et al. 2022 keep the same; TransformerLens users
often fold the final LayerNorm weight in. Here the sub-update's own direction sign(m_i)·v_i goes
through the scale γ of the norm it meets next (with the centring of a LayerNorm, without the
data-dependent division and the bias) and the unembedding: U (γ ⊙ v). Pre-LN models meet the final
norm; BERT (post-LN) the layer's output LayerNorm, then its input embeddings (the MLM decoder is
tied to them; the MLM transform head is not loaded with the encoder).

The whole update's effect: log-softmax of the logit lens at the position after the FFN (resid_post)
minus before it (resid_mid), each through the final norm recomputed on its own states.
"""

from __future__ import annotations

import torch

from schemas.kinds.ffn_projection import (
    FfnLayer,
    FfnProjectionJob,
    FfnProjectionParams,
    FfnProjectionResult,
    SubUpdate,
    TokenLogit,
    TokenShift,
)
from workers.context import Context
from workers.internals.capture import direction_logits, forward, in_out_weight, lens_logits, residual_hooks
from workers.internals.hooks import capture_inputs
from workers.internals.inputs import encode_for_dissection, resolve_indices
from workers.internals.vocab import token_texts
from workers.models.loading import LM


def projection_note(lm: LM) -> str:
    if lm.arch.post_norm:
        return "E (γ_l ⊙ (v − mean v)): the layer's output LayerNorm weight γ_l (centred, no bias or division), " \
               "then the input embeddings E (tied MLM decoder, no transform head)"
    norm = lm.module(lm.arch.final_norm)
    centred = "(v − mean v)" if isinstance(norm, torch.nn.LayerNorm) else "v"
    return f"U (γ ⊙ {centred}): the final norm's weight γ ({type(norm).__name__}; no bias or division), " \
           f"then the unembedding U ({lm.arch.unembed})"


def _top(lm: LM, logits: torch.Tensor, k: int) -> list[list[TokenLogit]]:
    top = logits.topk(k, dim=-1)  # (rows, k)
    texts = token_texts(lm, top.indices.tolist())
    return [[TokenLogit(token=t, id=i, logit=v) for t, i, v in zip(ts, ids, vs)]
            for ts, ids, vs in zip(texts, top.indices.tolist(), top.values.tolist())]


def _shifts(lm: LM, before: torch.Tensor, after: torch.Tensor, order: torch.Tensor) -> list[TokenShift]:
    ids = order.tolist()
    return [TokenShift(token=t, id=i, logprob_before=float(before[i]), logprob_after=float(after[i]),
                       delta=float(after[i] - before[i])) for t, i in zip(token_texts(lm, [ids])[0], ids)]


@torch.no_grad()
def run(lm: LM, job: FfnProjectionJob, ctx: Context) -> FfnProjectionResult:
    progress, limits = ctx.progress, ctx.limits
    params: FfnProjectionParams = job.params
    enc, _, layers = encode_for_dissection(lm, job, limits)
    (pos,) = resolve_indices([params.position], len(enc.ids), ["params", "position"], "position", "n_tokens")
    outs = {i: lm.layers[i].get_submodule(lm.arch.mlp_out) for i in layers}
    resid: dict[tuple[str, int], torch.Tensor] = {}
    with capture_inputs({str(i): m for i, m in outs.items()}) as coeffs, \
            residual_hooks(lm, layers, ("resid_mid", "resid_post"), resid, [pos]):
        forward(lm, enc.ids)
    progress(0.2)
    result = []
    for n, i in enumerate(layers):
        m = coeffs[str(i)][0, pos].float()  # (F,)
        w = in_out_weight(outs[i]).float()  # (F, d): row i is v_i
        score = m.abs() * w.norm(dim=-1)  # (F,)
        top = score.topk(min(params.top_values, score.numel()))
        signs = torch.sign(m[top.indices]).masked_fill(m[top.indices] == 0, 1.0)
        promoted = _top(lm, direction_logits(lm, i, signs[:, None] * w[top.indices]), params.top_tokens)
        before = torch.log_softmax(lens_logits(lm, resid[("resid_mid", i)][0]), -1)  # (V,)
        after = torch.log_softmax(lens_logits(lm, resid[("resid_post", i)][0]), -1)
        delta = after - before
        k = min(params.top_tokens, delta.numel())
        result.append(FfnLayer(
            layer=i,
            update_norm=float((m @ w).norm()),
            sub_updates=[SubUpdate(index=j, coefficient=float(m[j]), value_norm=float(w[j].norm()), score=s,
                                   top_tokens=toks,
                                   value_vector=w[j].tolist() if params.include_value_vectors else None)
                         for j, s, toks in zip(top.indices.tolist(), top.values.tolist(), promoted)],
            promoted=_shifts(lm, before, after, delta.topk(k).indices),
            suppressed=_shifts(lm, before, after, (-delta).topk(k).indices),
            coefficients=m.tolist() if params.include_coefficients else None,
        ))
        progress(0.2 + 0.8 * (n + 1) / len(layers))
    return FfnProjectionResult(provenance=ctx.provenance(lm, job), tokens=lm.token_strings(enc.ids), position=pos,
                               token=lm.tokenizer.decode([enc.ids[pos]]),
                               n_values=in_out_weight(outs[layers[0]]).shape[0], projection=projection_note(lm),
                               layers=result)
