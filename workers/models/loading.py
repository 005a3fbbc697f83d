"""Load a registry model once per worker; `LM` bundles the model, tokenizer and facts.

Weights come from disk only (a pip package's data folder, an HF folder, or the local HF cache
for hub ids): `HF_HUB_OFFLINE=1` is forced, so nothing downloads at run time.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from schemas.common import TextInput
from schemas.jobs import KINDS
from schemas.models import ModelSpec
from workers.models.architectures import Architecture, architecture_for


@dataclass
class Encoded:
    """A tokenized input. `special[i]`: BOS/EOS/chat markers; `word_ids[i]`: pre-tokenizer word."""

    ids: list[int]
    special: list[bool]
    word_ids: list[int | None]


@dataclass
class LM:
    spec: ModelSpec
    model: nn.Module
    tokenizer: Any
    arch: Architecture
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    _special_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def config(self) -> Any:
        return self.model.config

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    @property
    def layers(self) -> nn.ModuleList:
        return self.module(self.arch.layers)  # type: ignore[return-value]

    @property
    def embed(self) -> nn.Embedding:
        return self.module(self.arch.embed)  # type: ignore[return-value]

    # -- shape: the one place the config's names are read (LLaMA/BERT vs GPT-2 spellings) --------
    @property
    def n_layers(self) -> int:
        return int(getattr(self.config, "num_hidden_layers", None) or self.config.n_layer)

    @property
    def n_heads(self) -> int:
        return int(getattr(self.config, "num_attention_heads", None) or self.config.n_head)

    @property
    def n_kv_heads(self) -> int:
        """KV heads (fewer than `n_heads` under GQA)."""
        return int(getattr(self.config, "num_key_value_heads", None) or self.n_heads)

    @property
    def hidden_size(self) -> int:
        return int(getattr(self.config, "hidden_size", None) or self.config.n_embd)

    @property
    def head_dim(self) -> int:
        """`head_dim` from the config when it has one, never assumed to be hidden // heads."""
        return int(getattr(self.config, "head_dim", None) or self.hidden_size // self.n_heads)

    def facts(self) -> dict[str, Any]:
        c = self.config
        return {
            "id": self.id,
            "architecture": self.arch.family,
            "task": self.spec.task,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "intermediate_size": (getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None)  # GPT-2: n_inner
                                  or 4 * (c.n_embd if hasattr(c, "n_embd") else c.hidden_size)),
            "vocab_size": c.vocab_size,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "revision": self.spec.revision,
            "kinds": [k for k, s in KINDS.items() if self.spec.task in s.tasks],
            "has_mask_token": self.tokenizer.mask_token_id is not None,
            "has_chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }

    # -- text ---------------------------------------------------------------------------------
    def render(self, text: TextInput) -> str:
        """The exact string the model sees: the prompt, or the chat rendered by its template."""
        if text.prompt is not None:
            return text.prompt
        messages = [m.model_dump() for m in text.messages or []]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: TextInput | str, add_special_tokens: bool | None = None) -> Encoded:
        rendered = text if isinstance(text, str) else self.render(text)
        chat = not isinstance(text, str) and text.messages is not None
        if add_special_tokens is None:
            add_special_tokens = not chat  # a chat template already carries its markers
        enc = self.tokenizer(rendered, add_special_tokens=add_special_tokens)
        ids = list(enc["input_ids"])
        try:
            word_ids = list(enc.word_ids())
        except (AttributeError, ValueError):
            word_ids = list(range(len(ids)))
        special = [i in self._special_ids for i in ids]
        word_ids = [None if s else w for w, s in zip(word_ids, special)]
        return Encoded(ids, special, word_ids)

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]


def resolve_device(spec: ModelSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec.device)


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """cuda: bf16 by default; CPU: fp32 (bf16 matmuls on CPU are slow and lose the IG checks)."""
    if spec.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, spec.dtype)


def _folder(spec: ModelSpec) -> str:
    if spec.source == "package":
        package, _, sub = spec.path.partition("/")
        found = importlib.util.find_spec(package)  # located, never imported
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"model package {package!r} is not installed")
        return str(Path(list(found.submodule_search_locations)[0]) / sub)
    return spec.path


def load_model(spec: ModelSpec) -> LM:
    """Load `spec` in eval mode with parameter gradients off (methods need input gradients only)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    device = resolve_device(spec)
    dtype = resolve_dtype(spec, device)
    folder = _folder(spec)
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    if spec.revision and spec.source == "hub":
        kwargs["revision"] = spec.revision
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    auto = AutoModelForCausalLM if spec.task == "causal_lm" else AutoModel
    model = auto.from_pretrained(folder, dtype=dtype, **kwargs).to(device)
    return wrap(spec, model, tokenizer, device=device, dtype=dtype, load_seconds=time.perf_counter() - t0)


def wrap(spec: ModelSpec, model: nn.Module, tokenizer: Any, *, device: torch.device | None = None,
         dtype: torch.dtype | None = None, load_seconds: float = 0.0) -> LM:
    """An `LM` around an already built model (also used by unit tests with tiny random models)."""
    model.eval()
    model.requires_grad_(False)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a tokenizer.json may pad and truncate (all-MiniLM-L6-v2's: to 128): prompts
        backend.no_padding()  # are encoded, counted and published (workers/main.py) as they are
        backend.no_truncation()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    param = next(model.parameters())
    special = set(tokenizer.all_special_ids)
    special.update(i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False))
    return LM(
        spec=spec, model=model, tokenizer=tokenizer, arch=architecture_for(model.config.model_type),
        device=device or param.device, dtype=dtype or param.dtype, load_seconds=load_seconds,
        _special_ids=frozenset(special),
    )
