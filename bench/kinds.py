"""Run one Lantern kind in-process, as the worker does (the method module's `run`), from a job dict:
the peer benchmarks and their agreement tests call Lantern through this, so that a change of the
method protocol is absorbed in one place."""

from __future__ import annotations

import importlib
import inspect


def job_of(lm, kind: str, input: dict, params: dict | None = None):
    """The validated job model of `kind` (defaults applied), as the worker parses it."""
    from schemas.jobs import parse_job

    return parse_job({"kind": kind, "model": lm.id, "input": input, "params": params or {}})


def run_kind(lm, kind: str, input: dict, params: dict | None = None):
    """`workers.methods.<kind>.run(lm, job)` with no progress reporting and the default limits."""
    module = importlib.import_module(f"workers.methods.{kind}")
    job = job_of(lm, kind, input, params)
    params = inspect.signature(module.run).parameters
    if "progress" in params:  # the protocol before workers.context
        from workers.progress import no_progress

        return module.run(lm, job, no_progress)
    if "ctx" in params and params["ctx"].default is inspect.Parameter.empty:
        from workers.context import Context

        return module.run(lm, job, Context())
    return module.run(lm, job)
