"""The `progress` callable handed to every method: reports progress, enforces cancel and deadline.

RQ cannot interrupt a running CUDA call, so methods call `progress(fraction)` between batches;
that is where a cancel request or the job's deadline stops the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from workers.errors import Canceled, DeadlineExceeded

Progress = Callable[[float], None]


class JobHandle(Protocol):
    """What progress needs of an RQ job (kept narrow so tests can pass a stand-in)."""

    meta: dict

    def save_meta(self) -> None: ...


class JobProgress:
    """Throttled progress writes to job meta, plus cancel and deadline checks on every call."""

    def __init__(self, job: JobHandle | None, deadline: float, is_canceled: Callable[[], bool],
                 min_interval: float = 0.2):
        self.job = job
        self.deadline = deadline
        self.is_canceled = is_canceled
        self.min_interval = min_interval
        self._last_write = 0.0

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now > self.deadline:
            raise DeadlineExceeded("the job ran past its deadline between two batches")
        if now - self._last_write < self.min_interval and fraction < 1.0:
            return
        self._last_write = now
        if self.is_canceled():
            raise Canceled("canceled on request")
        if self.job is not None:
            self.job.meta["progress"] = round(min(max(fraction, 0.0), 1.0), 4)
            self.job.save_meta()


def no_progress(fraction: float) -> None:
    """For direct calls (tests, benchmarks): no reporting, no deadline."""
