"""Issue 10 item 5: a result with NaN or ±inf never finishes; it fails with a `non-finite-result`
problem naming the kind and the parameters that led there (workers/tasks.py, every kind, one
place). No Redis: `run_job` without an RQ job, as tests/unit/test_failures.py does."""

from __future__ import annotations

import json
import math

import pytest

from schemas.kinds.generate import GenerateResult
from workers import tasks
from workers.errors import JobFailed
from workers.finite import non_finite_paths
from workers.registry import REGISTRY


def test_non_finite_paths_find_nan_and_inf_anywhere():
    data = {"a": [1.0, [2.0, float("nan")]], "b": {"c": float("-inf"), "d": "nan", "e": None}, "f": 3}
    assert non_finite_paths(data) == ["a[1][1]", "b.c"]
    assert non_finite_paths({"x": [0.0, 1e308, -1e-308]}) == []
    assert len(non_finite_paths([float("nan")] * 50)) == 5


def test_a_result_with_nan_fails_the_job_with_a_problem_naming_kind_and_params(tiny_llama, monkeypatch):
    def nan_method(lm, job, ctx):
        return GenerateResult(provenance=ctx.provenance(lm, job), text="x", tokens=["x"], token_ids=[1], token_logprobs=[math.nan],
                              finish_reason="length", prompt_tokens=2)

    monkeypatch.setitem(tasks.MODELS, "tiny-llama", tiny_llama)
    monkeypatch.setitem(REGISTRY, "generate", REGISTRY["generate"]._replace(run=nan_method))
    payload = {"kind": "generate", "model": "tiny-llama", "input": {"prompt": "Hello world"},
               "params": {"temperature": 0.5, "max_new_tokens": 1}}
    with pytest.raises(JobFailed) as caught:
        tasks.run_job(payload)
    problem = caught.value.problem
    assert problem.type.endswith("/non-finite-result") and 400 <= problem.status < 500
    assert "generate" in problem.detail and "token_logprobs[0]" in problem.detail
    assert "temperature=0.5" in problem.detail
    assert {tuple(e.loc) for e in problem.errors} == {("params", "temperature"), ("params", "max_new_tokens")}
    json.dumps(problem.model_dump(mode="json"), allow_nan=False)  # the problem itself is valid JSON


def test_lime_with_a_tiny_kernel_width_finishes_with_finite_scores(tiny_llama, monkeypatch):
    monkeypatch.setitem(tasks.MODELS, "tiny-llama", tiny_llama)
    out = tasks.run_job({"kind": "attribution", "model": "tiny-llama",
                         "input": {"prompt": "When Mary and John went to the store", "target": " Mary"},
                         "params": {"method": "lime", "n_samples": 20, "kernel_width": 1e-200}})
    assert out["scores"] and all(isinstance(v, float) and math.isfinite(v) for row in out["scores"] for v in row)
    assert not non_finite_paths(out)
