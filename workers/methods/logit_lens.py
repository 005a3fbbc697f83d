"""`logit_lens`: the residual stream after each layer (and optionally after each attention sublayer)
read in the vocabulary (nostalgebraist 2020, "interpreting GPT: the logit lens"; TransformerLens's
`accumulated_resid` + `apply_ln_to_stack`).

The final norm is applied to each layer's states themselves, so its scale is recomputed per layer
and position. TransformerLens's `apply_ln_to_stack` defaults to the cached scale of the last layer,
which changes the lens at earlier layers; here the last layer's lens is exactly the model's logits
(tested). Residuals are kept only at the requested positions; logits are made one layer at a time.
Encoders loaded without an LM head read through their input embeddings (see `internals.unembedding`).
"""

from __future__ import annotations

import torch

from schemas.kinds.logit_lens import LensLayer, LogitLensJob, LogitLensParams, LogitLensResult
from workers.context import Context
from workers.internals.capture import forward, lens_logits, residual_hooks, unembedding
from workers.internals.inputs import encode_continuation, encode_for_dissection, resolve_indices
from workers.internals.vocab import token_texts
from workers.interventions.applied import applied
from workers.models.loading import LM


def read(lm: LM, h: torch.Tensor, top_k: int, target_id: int | None) -> dict:
    """Lens of states (P, d): top-k tokens and probabilities, and the target's rank and probability."""
    logp = torch.log_softmax(lens_logits(lm, h), -1)  # (P, V)
    top = logp.topk(top_k, dim=-1)
    ids = top.indices.tolist()
    out = {"top_tokens": token_texts(lm, ids), "top_ids": ids, "top_probs": top.values.exp().tolist()}
    if target_id is not None:
        t = logp[:, target_id]  # (P,)
        out["target_rank"] = (logp > t[:, None]).sum(-1).tolist()
        out["target_prob"] = t.exp().tolist()
    return out


@torch.no_grad()
def run(lm: LM, job: LogitLensJob, ctx: Context) -> LogitLensResult:
    progress, limits = ctx.progress, ctx.limits
    params: LogitLensParams = job.params
    enc, _, layers = encode_for_dissection(lm, job, limits)
    positions = resolve_indices(params.positions, len(enc.ids), ["params", "positions"], "positions", "n_tokens")
    target_id = encode_continuation(lm, job.input.target)[0] if job.input.target else None
    sites = ("resid_mid", "resid_post") if params.include_mid else ("resid_post",)
    store: dict[tuple[str, int], torch.Tensor] = {}
    with applied(lm, params, ctx.store), residual_hooks(lm, layers, sites, store, positions):  # steering, edits
        forward(lm, enc.ids)
    progress(0.2)
    out = []
    for n, i in enumerate(layers):
        for site in sites:
            out.append(LensLayer(layer=i, site=site, **read(lm, store.pop((site, i)), params.top_k, target_id)))
        progress(0.2 + 0.8 * (n + 1) / len(layers))
    return LogitLensResult(provenance=ctx.provenance(lm, job), 
        tokens=lm.token_strings(enc.ids), positions=positions,
        target_token=None if target_id is None else lm.tokenizer.decode([target_id]), target_id=target_id,
        unembedding=unembedding(lm)[1], layers=out,
    )
