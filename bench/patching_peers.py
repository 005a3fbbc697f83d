"""Activation patching by the peers, run the way their documentation runs them, for the reference
tests (tests/integration/test_patching_peers.py) and the benchmark (bench/bench_patching.py):

- TransformerLens 4.x: `TransformerBridge.boot_transformers(hf_model=...)` around a copy of the HF
  model (4.x removed `HookedTransformer`; the bridge keeps HF's weights and numerics, with eager
  attention forced on its copy), then `transformer_lens.patching.get_act_patch_*`: one forward
  per patch.
- nnsight 0.8: `LanguageModel` around a copy of the HF model; one trace reads the clean
  activations, then each trace batches many `tracer.invoke(corrupted)` calls, each writing one
  clean slice in place and keeping the last position's logits (nnsight's IOI patching tutorial).

Both peers get a copy of the model so that their wrappers (TransformerLens forces eager attention,
nnsight wraps modules) never touch the model Lantern runs. Effects are normalised the same way as
Lantern's: (patched − corrupted) / (clean − corrupted) on the logit difference at the last position,
with the clean and corrupted values from the peer's own runs; grids come back in Lantern's axis
order (layer, position) / (layer, head) / (layer, head, position).

The peers are installed by the Makefile target `$(VENV)/.peers-installed` (--no-deps), not by
pyproject.toml.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch

# Lantern component -> TransformerLens activation name ("all positions" form; by-position below)
TL_ALL_POS = {"residual": "get_act_patch_resid_pre", "attn_out": "get_act_patch_attn_out",
              "mlp_out": "get_act_patch_mlp_out", "attn_head": "get_act_patch_attn_head_out_all_pos",
              "head_query": "get_act_patch_attn_head_q_all_pos", "head_key": "get_act_patch_attn_head_k_all_pos",
              "head_value": "get_act_patch_attn_head_v_all_pos"}
TL_BY_POS = {"attn_head": "get_act_patch_attn_head_out_by_pos", "head_query": "get_act_patch_attn_head_q_by_pos",
             "head_key": "get_act_patch_attn_head_k_by_pos", "head_value": "get_act_patch_attn_head_v_by_pos"}
POSITION_COMPONENTS = ("residual", "attn_out", "mlp_out")


@dataclass
class PeerResult:
    effects: torch.Tensor  # normalised, Lantern's axis order (or flat, in the order of the patches asked)
    forwards: int  # model forwards run (clean and corrupted baselines included)
    positions_computed: int  # token positions × layers


def one_token(lm, text: str) -> int:
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def _logit_diff(answer: int, wrong: int):
    return lambda logits: logits[0, -1, answer] - logits[0, -1, wrong]


# ---------------------------------------------------------------- TransformerLens


def tl_bridge(lm):
    """A TransformerBridge around a copy of lm's HF model (no weight processing: HF numerics)."""
    from transformer_lens.model_bridge import TransformerBridge

    tok = copy.deepcopy(lm.tokenizer)
    # TransformerLens reloads a tokenizer by `name_or_path` unless it already adds BOS; Lantern's
    # tokenizers come from files (no name), and the token ids are passed in directly anyway.
    tok.init_kwargs.update(name_or_path=lm.spec.path or lm.id, add_bos_token=True)
    bridge = TransformerBridge.boot_transformers(lm.id, hf_model=copy.deepcopy(lm.model), tokenizer=tok,
                                                 device=lm.device, dtype=lm.dtype)
    bridge.eval()
    return bridge


def tl_effects(bridge, component: str, clean_ids: list[int], corrupt_ids: list[int], answer: int, wrong: int,
               per_position: bool = False, index_df=None) -> PeerResult:
    """TransformerLens's own patching function for `component`; `index_df` (a DataFrame of index rows,
    columns as the function's axes) patches only those rows and returns them flat, in order."""
    from transformer_lens import patching

    metric = _logit_diff(answer, wrong)
    clean = torch.tensor([clean_ids], device=bridge.cfg.device)
    corrupt = torch.tensor([corrupt_ids], device=bridge.cfg.device)
    with torch.no_grad():
        clean_logits, cache = bridge.run_with_cache(clean)
        corrupt_metric = float(metric(bridge(corrupt)))
        clean_metric = float(metric(clean_logits))
        name = (TL_BY_POS if per_position else TL_ALL_POS)[component]
        fn = getattr(patching, name)
        kwargs = {} if index_df is None else {"index_df": index_df, "index_axis_names": None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            patched = fn(bridge, corrupt, cache, metric, **kwargs).float().cpu()
    effects = (patched - corrupt_metric) / (clean_metric - corrupt_metric)
    if per_position and index_df is None:
        effects = effects.permute(0, 2, 1)  # TL: (layer, pos, head) -> Lantern: (layer, head, position)
    n = patched.numel()
    T, L = len(clean_ids), bridge.cfg.n_layers
    return PeerResult(effects, n + 2, (n + 2) * T * L)


def tl_tqdm_off() -> None:
    """TransformerLens's patching loop draws a tqdm bar per call; keep the benchmark's output readable."""
    import transformer_lens.patching as patching

    patching.tqdm = lambda it, *a, **k: it


# ---------------------------------------------------------------- nnsight


def nnsight_model(lm):
    """nnsight's LanguageModel around a copy of lm's HF model."""
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LanguageModel is deprecated in 0.8 for TransformersModel (same thing)
        return LanguageModel(copy.deepcopy(lm.model), tokenizer=lm.tokenizer)


def _envoy(model, lm, component: str, layer: int):
    """(envoy, reads its input?, first feature, width per unit) for a LLaMA-family block."""
    block = model.model.layers[layer]
    dh = lm.model.config.head_dim if getattr(lm.model.config, "head_dim", None) else (
        lm.model.config.hidden_size // lm.model.config.num_attention_heads)
    return {
        "residual": (block, True, dh),
        "attn_out": (block.self_attn, False, dh),
        "mlp_out": (block.mlp, False, dh),
        "attn_head": (block.self_attn.o_proj, True, dh),
        "head_query": (block.self_attn.q_proj, False, dh),
        "head_key": (block.self_attn.k_proj, False, dh),
        "head_value": (block.self_attn.v_proj, False, dh),
    }[component]


def _value(envoy, reads_input: bool):
    if reads_input:
        return envoy.input
    out = envoy.output
    return out[0] if isinstance(out, tuple) else out


def nnsight_effects(model, lm, component: str, clean_ids: list[int], corrupt_ids: list[int], answer: int,
                    wrong: int, patches: list[tuple[int, int | None, int | None]], rows_per_trace: int) -> PeerResult:
    """One clean trace reading the component at every layer patched, then traces of up to
    `rows_per_trace` invokes of the corrupted prompt, each with one (layer, position, unit) patch
    (position None: all positions; unit None: the whole vector). Flat effects in `patches` order."""
    import nnsight

    layers = sorted({p[0] for p in patches})
    clean = torch.tensor([clean_ids], device=lm.device)
    corrupt = torch.tensor([corrupt_ids], device=lm.device)
    T, L = len(clean_ids), len(lm.layers)
    with torch.no_grad():
        with model.trace(clean):
            acts = nnsight.save({})
            for layer in layers:
                envoy, reads_input, _ = _envoy(model, lm, component, layer)
                acts[layer] = _value(envoy, reads_input).clone()
            clean_logits = model.lm_head.output[:, -1].save()
        with model.trace(corrupt):
            corrupt_logits = model.lm_head.output[:, -1].save()
        values = []
        for start in range(0, len(patches), rows_per_trace):
            chunk = patches[start:start + rows_per_trace]
            with model.trace() as tracer:
                out = nnsight.save([])
                for layer, pos, unit in chunk:
                    with tracer.invoke(corrupt):
                        envoy, reads_input, dh = _envoy(model, lm, component, layer)
                        x = _value(envoy, reads_input)
                        feats = slice(None) if unit is None else slice(unit * dh, (unit + 1) * dh)
                        where = (slice(None), slice(None) if pos is None else pos, feats)
                        x[where] = acts[layer][where]
                        out.append(model.lm_head.output[:, -1])
            values += [float(o[0, answer] - o[0, wrong]) for o in out]
    clean_m = float(clean_logits[0, answer] - clean_logits[0, wrong])
    corrupt_m = float(corrupt_logits[0, answer] - corrupt_logits[0, wrong])
    effects = (torch.tensor(values) - corrupt_m) / (clean_m - corrupt_m)
    forwards = 2 + -(-len(patches) // rows_per_trace)
    return PeerResult(effects, forwards, (2 + len(patches)) * T * L)
