"""The reference app of bench_load: bare FastAPI whose only route enqueues the request's JSON on
RQ, as `service/queue.py` does (same task path, JSON serializer, queue per model), with nothing
else: no auth, no validation, no guards. Lantern's submit is measured against it.

    LANTERN_REDIS_URL=redis://... uvicorn bench.load_bare:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

app = FastAPI()
_redis = Redis.from_url(os.environ["LANTERN_REDIS_URL"])


@app.post("/v1/jobs", status_code=202)
def submit(body: dict) -> dict:
    queue = Queue(f"lantern:{body['model']}", connection=_redis, serializer=JSONSerializer)
    job = queue.enqueue_call("workers.tasks.run_job", args=(body,))
    return {"id": job.id, "status": "queued"}
