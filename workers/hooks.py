"""Context managers that capture or change activations and always remove their hooks.

Every hook a job installs goes through `hooks(...)`: the handles are removed in a `finally`, so an
exception inside the job cannot leave a hook behind, and `assert_clean` lets the worker verify
after each job that the shared model carries none.
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


def remove_all_hooks(model: nn.Module) -> int:
    """Last-resort cleanup after a job; returns how many hooks were left (should be 0)."""
    left = hook_count(model)
    for m in model.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        m._backward_hooks.clear()
    return left
