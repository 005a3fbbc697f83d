"""The Python client (lantern.client), the CLI's client commands and long polling, against the real
API and worker (the `service` fixture: SmolLM2 and MiniLM loaded by a worker process)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pytest

from lantern.client import AsyncClient, Client, LanternError
from schemas.kinds.attribution import AttributionResult
from schemas.kinds.generate import GenerateResult

pytestmark = pytest.mark.slow

IOI = {"prompt": "When Mary and John went to the store, John gave a drink to", "target": " Mary"}
SLOW = {"method": "integrated_gradients", "n_steps": 512}  # long enough to cancel while it runs


def test_submit_wait_result_typed_with_progress(service):
    seen = []
    with Client(service.base_url) as lc:
        job = lc.submit("attribution", "smollm2-135m", IOI, {"n_steps": 16})
        assert job.status in ("queued", "started") and job.kind == "attribution"
        job.wait(timeout=300, on_progress=lambda j: seen.append((j.status, j.progress)))
        assert job.status == "finished" and seen[-1] == ("finished", 1.0)
        res = job.result
        assert isinstance(res, AttributionResult) and res.target_tokens == [" Mary"]
        assert len(res.scores[0]) == len(res.input_tokens)
        html = res._repr_html_()
        assert html.count('class="attr-cell"') == 0 and html.count("<span title=") == len(res.input_tokens)
        assert job.id in [j.id for j in lc.jobs(limit=50)]
        assert any(m["id"] == "smollm2-135m" and m["workers"] >= 1 for m in lc.models())
        gen = lc.submit("generate", "smollm2-135m", {"prompt": "The capital of France is"}, {"max_new_tokens": 4})
        assert isinstance(gen.wait(300).result, GenerateResult)
        assert lc.steering_profiles() == [] or isinstance(lc.steering_profiles(), list)


def test_errors_are_lantern_errors_with_the_problem(service):
    with Client(service.base_url) as lc:
        with pytest.raises(LanternError) as e:
            lc.submit("attribution", "smollm2-135m", IOI, {"n_steps": 100000})
        assert e.value.status == 422 and e.value.type.endswith("invalid-request")
        assert any(err["loc"][-1] == "n_steps" for err in e.value.errors)
        with pytest.raises(LanternError) as e:
            lc.job("no-such-job")
        assert e.value.status == 404 and e.value.title
        job = lc.submit("attribution", "smollm2-135m", IOI, {"method": "occlusion", "window": 512})
        job.wait(300)
        assert job.status == "failed" and job.error.status == 422
        with pytest.raises(LanternError) as e:
            job.result
        assert "window" in e.value.detail


def test_cancel_ends_a_long_poll_at_once(service):
    with Client(service.base_url) as lc:
        job = lc.submit("attribution", "smollm2-135m", IOI, SLOW)
        while job.status == "queued":  # held until it starts (status change)
            job.refresh(wait=30)
        assert job.status == "started"
        answers = []
        poll = threading.Thread(target=lambda: answers.append(lc._get_view(job.id, 30)[0]))
        poll.start()
        canceled = job.cancel()
        assert canceled.view["cancel_requested"] or canceled.status == "canceled"
        poll.join()
        # the held request answered on the cancel (or a progress change), not at the 30 s cap
        assert answers[0]["cancel_requested"] or answers[0]["status"] == "canceled" or answers[0]["progress"] > 0
        job.wait(120)
        assert job.status == "canceled"


def test_long_poll_answers_on_each_change_until_finished(service):
    """Every answer to `?wait=30` differs from the previous one (status, progress or cancel flag): the
    server held each request until the job changed; the last answer is the finished job."""
    r = service.submit({"kind": "attribution", "model": "smollm2-135m", "input": IOI, "params": {"n_steps": 32}})
    view = r.json()
    states = [(view["status"], view["progress"])]
    while view["status"] not in ("finished", "failed", "canceled"):
        view = service.http.get(f"/v1/jobs/{view['id']}", params={"wait": 30}, timeout=60).json()
        states.append((view["status"], view["progress"]))
    assert view["status"] == "finished" and view["result"]["scores"]
    assert all(a != b for a, b in zip(states, states[1:])), states
    order = ["queued", "started", "finished"]
    assert [order.index(s) for s, _ in states] == sorted(order.index(s) for s, _ in states)
    # a finished job answers at once, whatever the wait
    again = service.http.get(f"/v1/jobs/{view['id']}", params={"wait": 30}).json()
    assert again["status"] == "finished"
    bad = service.http.get(f"/v1/jobs/{view['id']}", params={"wait": -1})
    assert bad.status_code == 422 and "wait" in bad.text


def test_async_client(service):
    async def go():
        async with AsyncClient(service.base_url) as lc:
            job = await lc.submit("logit_lens", "smollm2-135m", IOI, {"top_k": 2, "layers": [0, 29]})
            await job.wait(300)
            assert job.result.target_token == " Mary" and len(job.result.layers) == 2
            with pytest.raises(LanternError) as e:
                await lc.submit("attribution", "no-such-model", IOI)
            assert e.value.status == 422 and e.value.errors[0]["loc"][-1] == "model"
            return [j.id for j in await lc.jobs()]

    assert asyncio.run(go())


def _cli(service, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**service.env, "LANTERN_URL": service.base_url, **(env or {})})


def test_cli_submit_wait_json_and_heatmap(service):
    out = _cli(service, "submit", "attribution", "--model", "smollm2-135m", "--prompt", IOI["prompt"],
               "--target", " Mary", "--params", '{"n_steps": 16}', "--wait", "--json")
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert view["status"] == "finished" and view["result"]["target_tokens"] == [" Mary"]
    shown = _cli(service, "get", view["id"], env={"FORCE_COLOR": "1"})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("\x1b[48;5;") == len(view["result"]["input_tokens"])  # one coloured cell per token
    assert "→ ' Mary'" in shown.stdout and "Mary=" in shown.stdout
    listed = _cli(service, "jobs", "--limit", "50")
    assert view["id"] in listed.stdout
    models = _cli(service, "models")
    assert "smollm2-135m" in models.stdout and "workers=" in models.stdout
    bad = _cli(service, "submit", "attribution", "--model", "smollm2-135m", "--prompt", "x", "--params",
               '{"n_steps": 100000}')
    assert bad.returncode == 2 and '"status": 422' in bad.stderr and "n_steps" in bad.stderr


def test_cli_progress_bar_and_cancel(service):
    job = service.submit({"kind": "attribution", "model": "smollm2-135m", "input": IOI, "params": SLOW}).json()
    out = _cli(service, "cancel", job["id"])
    assert out.returncode == 0 and job["id"] in out.stdout
    waited = _cli(service, "get", job["id"], "--wait")
    assert waited.returncode == 1 and "canceled" in waited.stdout
    assert "%" in waited.stderr or "canceled" in waited.stdout  # the bar (if it ran) on stderr
