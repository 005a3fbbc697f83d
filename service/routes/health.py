"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.deps import MetricsDep, QueueDep
from service.problems import ProblemError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(queue: QueueDep, request: Request) -> dict:
    """Ready when Redis answers; also says how many workers are live and whether keys are required
    (`auth`: `keys`, or `open` when no API keys are configured)."""
    try:
        queue.redis.ping()
        workers = len(queue.live_workers())
    except Exception as e:
        raise ProblemError(503, "not-ready", "Not ready", f"Redis is not reachable: {type(e).__name__}",
                           headers={"Retry-After": "5"}) from None
    tenants = getattr(request.app.state, "tenants", None)
    auth = "open" if tenants is None or tenants.open else "keys"
    return {"status": "ready", "redis": "ok", "workers": workers, "auth": auth}


@router.get("/metrics", response_class=Response)
def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
