"""Issue 10 item 15: a cancel takes effect within a layer's compute, not at the end of a long batch.

`JobProgress` (cancel flag read at most every `cancel_interval`), `cancel_points` (a check per
decoder layer, forward and backward) and `checkpoint` on a tiny LLaMA, with a stand-in flag that
flips after a given number of checks: no Redis, no clock in the assertions."""

from __future__ import annotations

import pytest

from schemas.jobs import parse_job
from workers.context import Context
from workers.errors import Canceled, DeadlineExceeded
from workers.methods import attribution, generate
from workers.progress import JobProgress, cancel_points, checkpoint


class Flag:
    """`is_canceled` stand-in: counts reads; answers True from read number `after` on."""

    def __init__(self, after: int | None = None):
        self.after, self.reads = after, 0

    def __call__(self) -> bool:
        self.reads += 1
        return self.after is not None and self.reads >= self.after


class Job:
    def __init__(self):
        self.meta, self.saves = {}, 0

    def save_meta(self) -> None:
        self.saves += 1


def progress(flag: Flag, job: Job | None = None, **kw) -> JobProgress:
    return JobProgress(job, deadline=float("inf"), is_canceled=flag, **kw)


def test_the_cancel_flag_is_read_at_most_once_per_interval():
    flag, job = Flag(), Job()
    p = progress(flag, job, min_interval=1e9, cancel_interval=1e9)
    for i in range(1000):
        p(i / 1000)
        p.check()
    assert flag.reads == 1  # the first check only: the interval never passes
    assert job.saves == 1  # likewise the first progress write
    p(1.0)
    assert job.meta["progress"] == 1.0 and job.saves == 2  # the end is always written, once
    p(1.0)
    assert job.saves == 2
    eager = progress(Flag(), cancel_interval=0.0)
    for _ in range(5):
        eager.check()
    assert eager.is_canceled.reads == 5


def test_deadline_is_checked_on_every_call():
    p = JobProgress(None, deadline=0.0, is_canceled=Flag())
    with pytest.raises(DeadlineExceeded):
        p.check()


def test_a_long_generate_stops_at_the_token_after_the_flag(tiny_llama):
    seen: list[float] = []
    flag = Flag()
    p = progress(flag, cancel_interval=0.0)

    def report(fraction: float) -> None:
        seen.append(fraction)
        if len(seen) == 3:
            flag.after = flag.reads + 1  # the cancel arrives now, after the third token
        p(fraction)

    req = parse_job({"kind": "generate", "model": "tiny", "input": {"prompt": "Hello world"},
                     "params": {"max_new_tokens": 200, "stop_at_eos": False}})
    with cancel_points(tiny_llama.layers, p), pytest.raises(Canceled):
        generate.run(tiny_llama, req, Context(progress=report))
    assert len(seen) == 3  # stopped within the very progress call that followed the flag


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_one_big_ig_batch_stops_inside_its_forward_or_backward(tiny_llama, where):
    """All 64 IG steps fit one batch here: before, the first check came after the whole batch."""
    n_layers = len(tiny_llama.layers)
    counter = Flag()
    p = progress(counter, cancel_interval=0.0)
    req = parse_job({"kind": "attribution", "model": "tiny",
                     "input": {"prompt": "When Mary and John went to the store", "target": " Mary"},
                     "params": {"n_steps": 64}})
    reports: list[float] = []
    with cancel_points(tiny_llama.layers, p):
        attribution.run(tiny_llama, req, Context(progress=reports.append))
    assert reports == [1.0]  # one batch: a single progress report, at its end
    # checks per run: the endpoints' forward (n), then the batch's forward (n) and backward (n)
    assert counter.reads >= 3 * n_layers

    first_in_batch = n_layers + 1 if where == "forward" else 2 * n_layers + 1
    flag = Flag(after=first_in_batch)
    reports.clear()
    with cancel_points(tiny_llama.layers, progress(flag, cancel_interval=0.0)), pytest.raises(Canceled):
        attribution.run(tiny_llama, req, Context(progress=reports.append))
    assert reports == [] and flag.reads == first_in_batch


def test_checkpoint_reaches_the_running_job_only():
    checkpoint()  # outside a job: nothing to check
    flag = Flag(after=1)
    with cancel_points([], progress(flag, cancel_interval=0.0)), pytest.raises(Canceled):
        checkpoint()
    checkpoint()  # the job's block ended: nothing again


def test_probe_fits_check_between_newton_steps():
    import numpy as np
    import torch

    from workers.numerics import logistic

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(40, 3, 4)))
    y = (rng.random(40) > 0.5).astype(int)
    flag = Flag(after=2)
    with cancel_points([], progress(flag, cancel_interval=0.0)), pytest.raises(Canceled):
        logistic.fit(x, y, torch.ones(1, 40, dtype=torch.bool))
    assert flag.reads == 2
