"""Tiny randomly initialised models (LLaMA with GQA, GPT-2, BERT) and a byte-level BPE tokenizer
trained in-process, for fast unit tests with no downloads."""

from __future__ import annotations

import functools

import torch

from schemas.models import ModelSpec
from workers.models.loading import LM, wrap

CORPUS = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Two plus two is four. Three plus three is six.",
    "The quick brown fox jumps over the lazy dog!",
    "Hello world, this is a tiny tokenizer for tests; it knows a few words.",
]


@functools.cache
def tokenizer(kind: str = "bpe"):
    """Byte-level BPE (causal models: BOS/EOS/PAD) or the same with [CLS]/[SEP]/[MASK] (BERT)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"] if kind == "bpe" else ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    tok = Tokenizer(models.BPE(unk_token=None if kind == "bpe" else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    if kind == "bpe":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]", unk_token="[UNK]")


def tiny_llama(seed: int = 0, layers: int = 3) -> LM:
    """LLaMA with grouped-query attention: 6 query heads over 2 KV heads, head_dim 12 (≠ hidden 48 / 6 heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer("bpe")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=12, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    return wrap(ModelSpec(id="tiny-llama", path="-"), model, tok)


def tiny_gpt2(seed: int = 0, layers: int = 2) -> LM:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer("bpe")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=layers, n_head=4, n_positions=256,
                     bos_token_id=1, eos_token_id=2)
    return wrap(ModelSpec(id="tiny-gpt2", path="-"), GPT2LMHeadModel(cfg), tok)


def tiny_bert(seed: int = 0, layers: int = 2) -> LM:
    from transformers import BertConfig, BertModel

    tok = tokenizer("wordpiece")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256)
    return wrap(ModelSpec(id="tiny-bert", task="encoder", path="-"), BertModel(cfg), tok)
