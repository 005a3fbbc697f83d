"""The result of a sweep: one job run across a model's training checkpoints (`checkpoints` on any job
request, docs/checkpoints.md "Sweeps"). The parent job's `result` is a `SweepResult`: each checkpoint's
own result in step order, the scalars its kind declares (`Result.scalars()`), and per scalar the
largest jump and a change point (common/changepoint.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue

from schemas.common import Problem, ResultWarning


class SweepPoint(BaseModel):
    """One checkpoint of the sweep: its child job, how it ended, and what it returned."""

    step: int = Field(description="the training step")
    job_id: str = Field(description="the child job that ran it (readable at /v1/jobs/{job_id})")
    status: Literal["finished", "failed", "canceled"]
    scalars: dict[str, float] = Field(default_factory=dict, description="the kind's summary numbers (finished only)")
    result: dict[str, JsonValue] | None = Field(
        None, description="the child's whole result; absent when failed, canceled, or over the sweep's size "
                          "limit (then read it from the child job)")
    error: Problem | None = Field(None, description="why this checkpoint failed or was canceled")


class Jump(BaseModel):
    from_step: int
    to_step: int
    delta: float = Field(description="value at to_step minus value at from_step")


class ChangePoint(BaseModel):
    """The best single split of the series into two constant segments (least squares)."""

    step: int = Field(description="the first step of the after segment")
    previous_step: int = Field(description="the last checkpoint before it: the change happened in (previous_step, step]")
    before: float = Field(description="the series' mean before `step`")
    after: float = Field(description="the series' mean from `step` on")
    variance_explained: float = Field(description="share of the series' variance the split explains, 0..1")
    interval_log_fraction: float = Field(description="(previous_step, step] as a share of the sweep's log(1+step) range")
    interval_share: float = Field(description="|value(step) - value(previous_step)| / |after - before|")
    sparse: bool = Field(description="the checkpoints are too sparse around the change (see the warnings)")
    suggested_steps: list[int] = Field(default_factory=list, description="steps to add inside the interval when sparse")


class ScalarSeries(BaseModel):
    """One scalar across the finished checkpoints, with where it changes most."""

    steps: list[int]
    values: list[float]
    largest_jump: Jump | None = Field(None, description="the consecutive pair with the largest |Δ| (2+ points)")
    change_point: ChangePoint | None = Field(None, description="absent under 3 points or for a constant series")


class SweepResult(BaseModel):
    """A sweep's result: the parent job's `result` once every child job has ended."""

    sweep: Literal[True] = True
    kind: str
    model: str
    steps: list[int] = Field(description="the checkpoints swept, in step order")
    finished: int
    failed: int
    canceled: int
    series: list[SweepPoint] = Field(description="one entry per checkpoint, in step order")
    scalars: dict[str, ScalarSeries] = Field(default_factory=dict,
                                             description="per scalar the kind declares, over the finished checkpoints")
    results_included: bool = Field(description="false when the children's results together were over "
                                               "max_result_bytes: each point then carries its scalars only")
    warnings: list[ResultWarning] = Field(default_factory=list)
