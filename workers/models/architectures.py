"""Per-family tables of module paths, so methods never hard-code one architecture.

Paths are relative to the loaded top-level module (a `*ForCausalLM` or a `BertModel`); block
paths are relative to one entry of `layers`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    family: str
    embed: str  # token embedding (nn.Embedding)
    layers: str  # nn.ModuleList of blocks
    final_norm: str | None  # norm before the unembedding (None: encoder without LM head)
    unembed: str | None  # vocabulary projection
    attn: str  # attention module in a block
    attn_out: str  # output projection; its input is the per-head output, (.., heads*head_dim)
    v_proj: str  # module whose output holds the values, (.., n_kv_heads*head_dim) (fused: q, k, v)
    q_proj: str  # module whose output holds the queries, (.., n_heads*head_dim) (fused: the first third)
    k_proj: str  # module whose output holds the keys, (.., n_kv_heads*head_dim) (fused: the second third)
    mlp: str  # FFN module in a block
    mlp_out: str  # FFN output projection; its input is the activation m (Geva et al. 2022)
    attn_norm: str | None  # pre-attention norm (pre-LN) or post-attention norm (BERT)
    mlp_norm: str | None
    qkv_fused: bool = False  # v_proj outputs q, k and v concatenated (GPT-2 c_attn): values are the last third
    post_norm: bool = False  # post-LN (BERT): each sublayer's output is normalised; pre-LN: the input is


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture(
        family="llama", embed="model.embed_tokens", layers="model.layers", final_norm="model.norm",
        unembed="lm_head", attn="self_attn", attn_out="self_attn.o_proj", v_proj="self_attn.v_proj",
        q_proj="self_attn.q_proj", k_proj="self_attn.k_proj",
        mlp="mlp", mlp_out="mlp.down_proj", attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    ),
    "gpt2": Architecture(
        family="gpt2", embed="transformer.wte", layers="transformer.h", final_norm="transformer.ln_f",
        unembed="lm_head", attn="attn", attn_out="attn.c_proj", v_proj="attn.c_attn",
        q_proj="attn.c_attn", k_proj="attn.c_attn",
        mlp="mlp", mlp_out="mlp.c_proj", attn_norm="ln_1", mlp_norm="ln_2", qkv_fused=True,
    ),
    "bert": Architecture(
        family="bert", embed="embeddings.word_embeddings", layers="encoder.layer", final_norm=None,
        unembed=None, attn="attention.self", attn_out="attention.output.dense", v_proj="attention.self.value",
        q_proj="attention.self.query", k_proj="attention.self.key",
        mlp="intermediate", mlp_out="output.dense", attn_norm="attention.output.LayerNorm",
        mlp_norm="output.LayerNorm", post_norm=True,
    ),
}

# HF model_type -> family: LLaMA-like decoders share the table.
FAMILY_OF_MODEL_TYPE = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2", "bert": "bert"}


def architecture_for(model_type: str) -> Architecture:
    try:
        return ARCHITECTURES[FAMILY_OF_MODEL_TYPE[model_type]]
    except KeyError:
        raise ValueError(f"unsupported architecture {model_type!r}; known: {sorted(FAMILY_OF_MODEL_TYPE)}") from None
