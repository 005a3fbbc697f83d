"""Training checkpoints of a registry model, loaded on demand and kept in an LRU bounded by bytes.

A registry entry may list `checkpoints` (schemas/models.py `CheckpointSpec`); a job that names
`checkpoint: step` runs on that step's weights. The worker serving the model keeps its base model
resident (workers.tasks.MODELS) and, beside it, the most recently used checkpoints in a
`CheckpointCache` whose budget is `LANTERN_CHECKPOINT_CACHE_BYTES` (`CheckpointSettings`), measured as
the parameter and buffer bytes of the loaded modules. A checkpoint larger than the whole budget is
loaded, served to its job and not kept. Loading never downloads (`local_files_only=True`): a `dir`
checkpoint is an HF folder, a `hub` one a revision of the hub id already in the local HF cache, a
`file` one a state dict (.safetensors, or .bin/.pt read with `weights_only=True`) loaded into the base
model's architecture. Every checkpoint shares the base model's tokenizer, dtype and device (the API
counts prompt tokens with the base tokenizer), so a checkpoint whose vocabulary differs is refused.

Load time is exported as `lantern_checkpoint_load_seconds`, the cache's bytes and entries as gauges,
hits/misses/evictions as a counter (workers/metrics.py).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from torch import nn

from schemas.models import CheckpointSpec
from workers import metrics
from workers.errors import BadInput
from workers.models.loading import LM, wrap

GIB = 1024**3

# nn.Module -> the step it was loaded from; read by provenance (workers/context.py) through `step_of`.
_STEPS: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


class CheckpointSettings(BaseSettings):
    """The worker's checkpoint settings (environment `LANTERN_CHECKPOINT_CACHE_BYTES`)."""

    model_config = SettingsConfigDict(env_prefix="LANTERN_", extra="ignore")

    checkpoint_cache_bytes: int = Field(2 * GIB, ge=0, description="the LRU's budget in parameter bytes; "
                                                                    "0 keeps none (each job loads its step)")


def module_bytes(model: nn.Module) -> int:
    """Bytes of a module's parameters and buffers: what the cache counts against its budget."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def step_of(lm: LM) -> int | None:
    """The checkpoint step `lm` was loaded from; None for a base model."""
    return _STEPS.get(lm.model)


def load_checkpoint(base: LM, ckpt: CheckpointSpec) -> LM:
    """`ckpt` of `base`'s model, on the base's device and dtype with the base's tokenizer, from disk only."""
    from transformers import AutoModel, AutoModelForCausalLM

    auto = AutoModelForCausalLM if base.spec.task == "causal_lm" else AutoModel
    kwargs = {"dtype": base.dtype, "local_files_only": True, "trust_remote_code": False}
    if ckpt.source == "dir":
        model = auto.from_pretrained(ckpt.path, **kwargs)
    elif ckpt.source == "hub":
        model = auto.from_pretrained(ckpt.path or base.spec.path, revision=ckpt.revision, **kwargs)
    else:
        model = auto.from_config(base.config, dtype=base.dtype)
        model.load_state_dict(_state_dict(Path(str(ckpt.path))), strict=True)
    if model.config.vocab_size != base.config.vocab_size:
        raise BadInput(f"checkpoint {ckpt.step} has vocab_size {model.config.vocab_size}, the model "
                       f"{base.config.vocab_size}: a checkpoint must share the model's tokenizer")
    model = model.to(base.device)
    spec = base.spec.model_copy(update={"revision": ckpt.revision or f"{base.spec.revision or base.id}@step-{ckpt.step}"})
    lm = wrap(spec, model, base.tokenizer, device=base.device, dtype=base.dtype)
    _STEPS[lm.model] = ckpt.step
    return lm


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class CheckpointCache:
    """The most recently used checkpoints, at most `budget_bytes` of parameters and buffers in all.

    `get(base, step)` returns the LM of `base`'s checkpoint `step`: from the cache (moved to the most
    recent end) or loaded, timed, and kept after evicting the least recently used entries until it
    fits. Jobs run one at a time in a worker (SimpleWorker); the lock only keeps the bookkeeping
    consistent if a caller shares a cache across threads."""

    def __init__(self, budget_bytes: int | None = None, loader: Callable[[LM, CheckpointSpec], LM] = load_checkpoint):
        self.budget_bytes = CheckpointSettings().checkpoint_cache_bytes if budget_bytes is None else budget_bytes
        self._loader = loader
        self._entries: OrderedDict[tuple[str, int], tuple[LM, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.load_seconds = 0.0

    @property
    def bytes(self) -> int:
        """Bytes held now (the sum of the entries' module bytes)."""
        return sum(size for _, size in self._entries.values())

    def models(self) -> list[nn.Module]:
        """The modules held now (the worker sweeps them for hooks a job left, as it does the base model)."""
        return [lm.model for lm, _ in self._entries.values()]

    def keys(self) -> list[tuple[str, int]]:
        """(model id, step) held now, least recently used first."""
        return list(self._entries)

    def get(self, base: LM, step: int) -> LM:
        ckpt = base.spec.checkpoint(step)
        if ckpt is None:
            steps = [c.step for c in base.spec.checkpoints or ()]
            raise BadInput(f"model {base.id!r} has no checkpoint at step {step}; it has {steps}")
        key = (base.id, step)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                metrics.CHECKPOINT_CACHE.labels("hit").inc()
                return self._entries[key][0]
        metrics.CHECKPOINT_CACHE.labels("miss").inc()
        with self._lock:  # make room first, at the base model's size (the same architecture): peak memory
            self._evict_to_fit(module_bytes(base.model))  # stays within the budget plus the one being loaded
        t0 = time.perf_counter()
        lm = self._loader(base, ckpt)
        seconds = time.perf_counter() - t0
        lm.load_seconds = seconds
        self.loads += 1
        self.load_seconds += seconds
        metrics.CHECKPOINT_LOAD.labels(base.id).observe(seconds)
        size = module_bytes(lm.model)
        with self._lock:
            if size <= self.budget_bytes:  # else: served to this job, never kept
                self._evict_to_fit(size)
                self._entries[key] = (lm, size)
            self._publish()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # evicted weights go back to the device, not to torch's cache
        return lm

    def _evict_to_fit(self, size: int) -> None:
        """Drop least recently used entries until `size` more bytes fit (all of them if it never will)."""
        while self._entries and self.bytes + size > self.budget_bytes:
            self._entries.popitem(last=False)
            metrics.CHECKPOINT_CACHE.labels("evict").inc()
        self._publish()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._publish()

    def _publish(self) -> None:
        metrics.CHECKPOINT_CACHE_BYTES.set(self.bytes)
        metrics.CHECKPOINT_CACHE_ENTRIES.set(len(self._entries))
