"""The `progress` callable handed to every method: reports progress, enforces cancel and deadline.

RQ cannot interrupt a running CUDA call, so a job stops only where it checks. Checks happen at:

- every `progress(fraction)` a method calls between its batches, tokens, layers or folds;
- every decoder layer of every forward, and of every backward, while a job runs (`cancel_points`,
  installed once by workers/tasks.py for every kind): a single large batch (IG's 50 steps in one
  forward+backward on a CPU take ~20 s) is stopped within one layer's compute;
- `checkpoint()` in loops that run no forward (the probes' Newton iterations).

A check is cheap: the deadline is a clock read, the cancel flag a Redis EXISTS at most every
`cancel_interval` seconds (0.2), and progress is written to job meta at most every `min_interval`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol

import torch
from torch import nn

from workers.errors import Canceled, DeadlineExceeded

Progress = Callable[[float], None]


class JobHandle(Protocol):
    """What progress needs of an RQ job (kept narrow so tests can pass a stand-in)."""

    meta: dict

    def save_meta(self) -> None: ...


class JobProgress:
    """Progress writes to job meta, cancel and deadline checks, each throttled by time."""

    def __init__(self, job: JobHandle | None, deadline: float, is_canceled: Callable[[], bool],
                 min_interval: float = 0.2, cancel_interval: float = 0.2):
        self.job = job
        self.deadline = deadline
        self.is_canceled = is_canceled
        self.min_interval = min_interval
        self.cancel_interval = cancel_interval
        self._last_write = float("-inf")
        self._last_cancel_check = float("-inf")
        self._written = 0.0

    def check(self) -> None:
        """Raise `DeadlineExceeded` past the deadline, `Canceled` once a cancel is requested (the
        flag is read at most every `cancel_interval` seconds)."""
        now = time.monotonic()
        if now > self.deadline:
            raise DeadlineExceeded("the job ran past its deadline")
        if now - self._last_cancel_check >= self.cancel_interval:
            self._last_cancel_check = now
            if self.is_canceled():
                raise Canceled("canceled on request")

    def __call__(self, fraction: float) -> None:
        self.check()
        fraction = round(min(max(fraction, 0.0), 1.0), 4)
        now = time.monotonic()
        due = now - self._last_write >= self.min_interval or (fraction >= 1.0 > self._written)
        if due and self.job is not None and fraction != self._written:
            self._last_write, self._written = now, fraction
            self.job.meta["progress"] = fraction
            self.job.save_meta()


def no_progress(fraction: float) -> None:
    """For direct calls (tests, benchmarks): no reporting, no deadline."""


_current: ContextVar[JobProgress | None] = ContextVar("lantern_job_progress", default=None)


def checkpoint() -> None:
    """Check cancel and deadline of the running job, if any (a no-op outside a worker's job): for
    long loops deep in helpers that are not handed the job's `progress`."""
    if (progress := _current.get()) is not None:
        progress.check()


@contextmanager
def cancel_points(layers: nn.ModuleList | list[nn.Module], progress: JobProgress) -> Iterator[None]:
    """While the block runs: `checkpoint()` reaches `progress`, and every layer in `layers` checks
    it as its forward starts and as the gradient reaches its input in a backward."""
    def on_grad(grad: torch.Tensor) -> None:
        progress.check()

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        progress.check()
        x = args[0] if args else kwargs.get("hidden_states")
        if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
            x.register_hook(on_grad)  # lives as long as this forward's graph

    token = _current.set(progress)
    handles = [layer.register_forward_pre_hook(pre_hook, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        _current.reset(token)
