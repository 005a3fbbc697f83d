"""Context managers that capture or change activations and always remove their hooks.

Every hook a job installs goes through `hooks(...)`: the handles are removed in a `finally`, so an
exception inside the job cannot leave a hook behind. As a last line, the worker snapshots the
model's hooks before each job and afterwards removes (and counts) any a method added and left,
but not the hooks transformers itself installs on first use of `output_hidden_states` /
`output_attentions` and relies on afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

ForwardHook = Callable[[nn.Module, tuple, Any], Any]
PreHook = Callable[[nn.Module, tuple], Any]


@contextmanager
def hooks(forward: list[tuple[nn.Module, ForwardHook]] = (), pre: list[tuple[nn.Module, PreHook]] = ()) -> Iterator[None]:
    """Install forward hooks (may return a new output) and pre-hooks (may return new args)."""
    handles = []
    try:
        for module, fn in forward:
            handles.append(module.register_forward_hook(fn))
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_inputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the first positional input of each named module on every forward (last one wins)."""
    store: dict[str, torch.Tensor] = {}

    def make(name: str) -> PreHook:
        def fn(module: nn.Module, args: tuple) -> None:
            store[name] = args[0]
        return fn

    with hooks(pre=[(m, make(n)) for n, m in modules.items()]):
        yield store


@contextmanager
def capture_outputs(modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output (first element if a tuple) of each named module on every forward."""
    store: dict[str, torch.Tensor] = {}

    def make(name: str) -> ForwardHook:
        def fn(module: nn.Module, args: tuple, output: Any) -> None:
            store[name] = output[0] if isinstance(output, tuple) else output
        return fn

    with hooks(forward=[(m, make(n)) for n, m in modules.items()]):
        yield store


def hook_count(model: nn.Module) -> int:
    """Hooks currently installed anywhere in `model` (forward, pre-forward, backward)."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


HookIds = set[tuple[int, int]]


def _hook_dicts(model: nn.Module):
    for m in model.modules():
        yield from (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks)


def hook_ids(model: nn.Module) -> HookIds:
    """Every hook on `model`, as (id of its dict, handle id): a snapshot taken before a job."""
    return {(id(d), key) for d in _hook_dicts(model) for key in d}


def remove_hooks_since(model: nn.Module, before: HookIds) -> int:
    """Remove the hooks added since `before` except transformers' own; returns how many (should be 0)."""
    removed = 0
    for d in _hook_dicts(model):
        for key in [k for k, fn in d.items() if (id(d), k) not in before
                    and not getattr(fn, "__module__", "").startswith("transformers")]:
            del d[key]
            removed += 1
    return removed
