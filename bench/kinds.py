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


def run_kind(lm, kind: str, input: dict, params: dict | None = None, limits=None):
    """`workers.methods.<kind>.run(lm, job, ctx)` with no progress reporting and `limits` (default: the
    settings' defaults)."""
    module = importlib.import_module(f"workers.methods.{kind}")
    job = job_of(lm, kind, input, params)
    signature = inspect.signature(module.run).parameters
    if "progress" in signature:  # the protocol before workers.context
        from workers.progress import no_progress

        return module.run(lm, job, no_progress, limits)
    from workers.context import Context

    return module.run(lm, job, Context(limits=limits) if limits is not None else Context())
