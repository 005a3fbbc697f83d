"""Sweeps across training checkpoints (service/sweeps.py, common/sweeps.py) through the real app on a
private Redis, with model workers run in-process (RQ `SimpleWorker`, burst) on a tiny LLaMA whose
registry entry lists four checkpoints saved by the fixture (different random weights per step):

- `checkpoint` / `checkpoints` are checked against the registry at submit (422 naming the field and
  the known steps; a model without checkpoints is a 422);
- a sweep over N checkpoints fans out into N ordinary child jobs and returns N results equal to N
  single `checkpoint` jobs, in step order, with the kind's scalars and their change points;
- a child's failure is reported for its checkpoint and the others still finish;
- cancel stops the rest (queued children canceled, the parent canceled at once);
- a worker killed mid-sweep (its child left `started`, no heartbeat) loses no checkpoint's result:
  the reaper requeues the child and the sweep still finishes with every result;
- long polling sees a sweep's progress, the webhook worker's pass finalizes a sweep nobody reads.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from common.sweeps import child_id, finalize_open
from delivery.reaper import reap
from schemas.keys import SWEEPS_OPEN, WEBHOOK_QUEUE, active_jobs_key, queue_name
from schemas.models import ModelSpec
from service.config import Settings
from service.main import create_app
from service.sweeps import snapshot as sweep_snapshot

MODEL = "tiny-ckpt"
STEPS = [0, 10, 100, 1000]
DB = 12
LENS = {"kind": "logit_lens", "model": MODEL, "input": {"prompt": "The capital of France is", "target": " Paris"},
        "params": {"top_k": 2, "positions": [-1]}}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ModelSpec:
    """A tiny LLaMA base and four checkpoints of it (same tokenizer, other seeds) saved as HF folders."""
    from tests.tiny import tiny_llama

    root = tmp_path_factory.mktemp("checkpoints")

    def save(seed: int, name: str) -> str:
        lm = tiny_llama(seed=seed)
        lm.model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
        return str(root / name)

    base = save(100, "base")
    ckpts = [{"step": s, "source": "dir", "path": save(i + 1, f"step-{s}")} for i, s in enumerate(STEPS)]
    return ModelSpec.model_validate({"id": MODEL, "source": "dir", "path": base, "dtype": "float32",
                                     "device": "cpu", "checkpoints": ckpts})


@pytest.fixture(scope="module")
def loaded(spec):
    """The worker side in this process: the base model in workers.tasks.MODELS (checkpoints load on demand)."""
    from workers import tasks
    from workers.models.loading import load_model

    tasks.MODELS[MODEL] = load_model(spec)
    yield tasks
    tasks.MODELS.pop(MODEL, None)


@pytest.fixture
def r(private_redis) -> Redis:
    conn = Redis.from_url(private_redis.url(DB))
    conn.flushdb()
    return conn


@pytest.fixture
def client(r, private_redis, spec, monkeypatch) -> TestClient:
    plain = {"id": "tiny-plain", "source": "dir", "path": spec.path, "dtype": "float32", "device": "cpu"}
    monkeypatch.setenv("LANTERN_MODELS", json.dumps([spec.model_dump(mode="json"), plain]))
    return TestClient(create_app(Settings(redis_url=private_redis.url(DB), webhook_allowed_networks="127.0.0.0/8")))


def work(r: Redis, max_jobs: int | None = None) -> None:
    """A model worker of MODEL, in this process, until its queue is empty (or `max_jobs`)."""
    q = Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer)
    SimpleWorker([q], connection=r, serializer=JSONSerializer).work(burst=True, max_jobs=max_jobs)


def submit(client: TestClient, body: dict) -> dict:
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def without_timing(result: dict) -> dict:
    out = json.loads(json.dumps(result))
    out["provenance"].pop("elapsed_s")
    return out


def test_checkpoint_fields_are_checked_against_the_registry(client):
    bad = client.post("/v1/jobs", json={**LENS, "checkpoints": [10, 7, 1000]})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    (err,) = bad.json()["errors"]
    assert err["loc"] == ["body", "checkpoints", 1] and "7" in err["msg"] and err["ctx"]["known"] == STEPS
    one = client.post("/v1/jobs", json={**LENS, "checkpoint": 5}).json()
    assert one["errors"][0]["loc"] == ["body", "checkpoint"] and str(STEPS) in one["errors"][0]["msg"]
    none = client.post("/v1/jobs", json={**LENS, "model": "tiny-plain", "checkpoints": "all"})
    assert none.status_code == 422 and none.json()["errors"][0]["type"] == "no_checkpoints"
    both = client.post("/v1/jobs", json={**LENS, "checkpoint": 10, "checkpoints": [10]})
    assert both.status_code == 422 and both.json()["errors"][0]["loc"][-1] == "checkpoints"


def test_a_sweep_equals_single_jobs_per_checkpoint(client, r, loaded):
    sweep = submit(client, {**LENS, "checkpoints": "all"})
    assert sweep["status"] == "queued" and sweep["progress"] == 0.0
    singles = {s: submit(client, {**LENS, "checkpoint": s})["id"] for s in STEPS}
    q = Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer)
    assert [j for j in q.job_ids if j.startswith(sweep["id"])] == [child_id(sweep["id"], s) for s in STEPS]
    assert sweep["id"] not in q.job_ids  # the parent takes no worker
    work(r, max_jobs=1)
    view = client.get(f"/v1/jobs/{sweep['id']}").json()
    assert view["status"] == "started" and view["progress"] == pytest.approx(1 / len(STEPS))
    work(r)
    view = client.get(f"/v1/jobs/{sweep['id']}").json()
    assert view["status"] == "finished", view
    assert view["progress"] == 1.0 and view["created_at"] <= view["started_at"] <= view["finished_at"]
    result = view["result"]
    assert result["steps"] == STEPS and result["finished"] == len(STEPS) and result["results_included"]
    assert [p["step"] for p in result["series"]] == STEPS
    for point in result["series"]:
        single = client.get(f"/v1/jobs/{singles[point['step']]}").json()["result"]
        assert without_timing(point["result"]) == without_timing(single)
        assert point["result"]["provenance"]["revision"].endswith(f"@step-{point['step']}")
        layer = point["result"]["layers"][-1]
        assert point["scalars"] == {"target_prob": layer["target_prob"][-1], "target_rank": layer["target_rank"][-1]}
    # the checkpoints differ (other seeds), so the series moves; its summary is over those values
    probs = result["scalars"]["target_prob"]
    assert probs["steps"] == STEPS and probs["values"] == [p["scalars"]["target_prob"] for p in result["series"]]
    deltas = [b - a for a, b in zip(probs["values"], probs["values"][1:])]
    i = max(range(len(deltas)), key=lambda k: abs(deltas[k]))
    assert (probs["largest_jump"]["from_step"], probs["largest_jump"]["to_step"]) == (STEPS[i], STEPS[i + 1])
    assert probs["change_point"]["step"] in STEPS[1:]
    assert r.zscore(SWEEPS_OPEN, sweep["id"]) is None and r.zscore(active_jobs_key("anonymous"), sweep["id"]) is None
    # once finalized, the children live as long as the sweep's result, not as long as the sweep could have run
    ttl = Settings().result_ttl_s
    assert 0 < r.ttl(f"rq:job:{child_id(sweep['id'], STEPS[0])}") <= ttl
    assert 0 < r.ttl(f"rq:results:{child_id(sweep['id'], STEPS[0])}") <= ttl
    listed = client.get("/v1/jobs").json()["jobs"]
    assert sweep["id"] in [j["id"] for j in listed] and not any(j["id"].startswith(sweep["id"] + "_") for j in listed)


def test_a_failed_checkpoint_is_reported_and_the_others_finish(client, r, loaded, spec):
    # step 10's folder goes missing after submit: its child fails on the worker, the others finish
    sweep = submit(client, {**LENS, "checkpoints": [0, 10, 100]})
    broken = next(c for c in spec.checkpoints if c.step == 10)
    real = broken.path
    loaded.CHECKPOINTS.clear()
    broken.path = real + "-missing"
    try:
        work(r)
    finally:
        broken.path = real
    result = client.get(f"/v1/jobs/{sweep['id']}").json()["result"]
    assert [p["status"] for p in result["series"]] == ["finished", "failed", "finished"]
    assert result["series"][1]["error"]["type"].startswith("/problems/") and result["series"][1]["result"] is None
    assert result["scalars"]["target_prob"]["steps"] == [0, 100]
    assert any(w["type"] == "sweep-checkpoints-failed" and w["ctx"]["steps"] == [10] for w in result["warnings"])


def test_cancel_stops_the_rest(client, r, loaded):
    sweep = submit(client, {**LENS, "checkpoints": "all"})
    work(r, max_jobs=1)  # one checkpoint done, three queued
    canceled = client.delete(f"/v1/jobs/{sweep['id']}")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert "1 of 4" in canceled.json()["error"]["detail"]
    q = Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer)
    assert q.count == 0  # nothing left for a worker
    states = [Job.fetch(child_id(sweep["id"], s), connection=r, serializer=JSONSerializer).get_status()
              for s in STEPS]
    assert states[0] == JobStatus.FINISHED and all(s == JobStatus.CANCELED for s in states[1:])
    assert client.get(f"/v1/jobs/{sweep['id']}").json()["status"] == "canceled"
    assert client.delete(f"/v1/jobs/{sweep['id']}").status_code == 409
    assert r.zscore(active_jobs_key("anonymous"), sweep["id"]) is None


def test_a_running_child_is_asked_to_stop(client, r, loaded):
    sweep = submit(client, {**LENS, "checkpoints": [0, 10]})
    q = Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer)
    first = _start_without_running(r, q, "w-running")
    r.set("lantern:worker:w-running", "{}", ex=60)  # alive: its job is running, not lost
    assert client.delete(f"/v1/jobs/{sweep['id']}").json()["status"] == "canceled"
    assert r.exists(f"lantern:cancel:{first.id}")  # it stops at its next progress check
    assert q.count == 0


def _start_without_running(r: Redis, q: Queue, worker_name: str) -> Job:
    """Leave the next job of `q` as a worker leaves it when it dies mid-run (tests/integration/test_reaper.py)."""
    worker = SimpleWorker([q], connection=r, serializer=JSONSerializer, name=worker_name)
    job = q.dequeue_any([q], timeout=None, connection=r, serializer=JSONSerializer)[0]
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return job


def test_a_worker_killed_mid_sweep_loses_no_checkpoint(client, r, loaded):
    sweep = submit(client, {**LENS, "checkpoints": "all"})
    q = Queue(queue_name(MODEL), connection=r, serializer=JSONSerializer)
    work(r, max_jobs=1)
    lost = _start_without_running(r, q, "killed")  # the second checkpoint's worker dies mid-run
    assert lost.id == child_id(sweep["id"], STEPS[1])
    assert client.get(f"/v1/jobs/{sweep['id']}").json()["status"] == "started"
    assert reap(r, [MODEL], retries=1) == [(lost.id, "requeued")]  # no heartbeat: the reaper takes it back
    work(r)
    result = client.get(f"/v1/jobs/{sweep['id']}").json()["result"]
    assert result["finished"] == len(STEPS) and all(p["result"] for p in result["series"])
    assert Job.fetch(lost.id, connection=r, serializer=JSONSerializer).meta["worker_lost"] == 1


def test_long_polling_progress_and_finalizing_without_a_reader(client, r, loaded):
    hook = {"url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "QUNNRS1zZWNyZXQtZm9yLXdlYmhvb2stdGVzdHMtMDE="}
    sweep = submit(client, {**LENS, "checkpoints": [0, 10], "webhook": hook})
    raw = r.hget(f"rq:job:{sweep['id']}", "meta")
    assert sweep_snapshot(r, sweep["id"], raw) == (b"queued", 0.0)
    assert b"whsec_" not in r.hget(f"rq:job:{sweep['id']}", "data")  # the secret is kept out of the payload
    work(r, max_jobs=1)
    assert sweep_snapshot(r, sweep["id"], raw) == (b"started", 0.5)
    work(r)
    assert sweep_snapshot(r, sweep["id"], raw) == (b"finished", 1.0)
    assert r.llen(WEBHOOK_QUEUE) == 0  # children send no webhooks of their own
    assert finalize_open(r) == [(sweep["id"], "finished")]  # the webhook worker's pass, nobody polled
    (entry,) = [json.loads(e) for e in r.lrange(WEBHOOK_QUEUE, 0, -1)]
    body = json.loads(entry["body"])
    assert entry["job"] == sweep["id"] and body["type"] == "job.finished" and body["data"]["result"]["sweep"]
    assert finalize_open(r) == []
    view = client.get(f"/v1/jobs/{sweep['id']}").json()
    assert view["status"] == "finished" and view["result"] == body["data"]["result"]


def test_the_python_client_submits_a_sweep_and_waits_for_it(client, r, loaded):
    from service.client import Client

    lantern = Client("http://testserver")
    lantern.http = client  # the app in this process (a TestClient is an httpx.Client)
    job = lantern.submit("logit_lens", MODEL, LENS["input"], LENS["params"], checkpoints=[10, 1000])
    one = lantern.submit("logit_lens", MODEL, LENS["input"], LENS["params"], checkpoint=1000)
    work(r)
    result = job.wait(timeout=30).result  # typed: schemas.sweeps.SweepResult
    assert result.sweep and [p.step for p in result.series] == [10, 1000]
    single = one.wait(timeout=30).result.model_dump(mode="json")
    assert without_timing(result.series[1].result) == without_timing(single)
    assert result.series[1].scalars["target_prob"] == single["layers"][-1]["target_prob"][-1]

