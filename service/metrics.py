"""API-side Prometheus metrics: HTTP traffic, submissions, and queue depth / live workers read from
Redis at scrape time. One registry per app, so several apps (tests) never clash."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send

from service.queue import JobQueue

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class QueueCollector:
    """lantern_queue_depth{model} and lantern_live_workers{model}, read when scraped."""

    def __init__(self, queue: JobQueue, models: list[str]):
        self.queue = queue
        self.models = models

    def collect(self):
        depth = GaugeMetricFamily("lantern_queue_depth", "Jobs waiting in a model's queue", labels=["model"])
        live = GaugeMetricFamily("lantern_live_workers", "Workers holding a model", labels=["model"])
        try:
            workers = self.queue.live_workers()
            for model in self.models:
                depth.add_metric([model], self.queue.depth(model))
                live.add_metric([model], sum(model in w["model_ids"] for w in workers))
        except Exception:  # Redis away: the scrape still answers, without these series
            return
        yield depth
        yield live


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lantern_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("lantern_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.submitted = Counter("lantern_jobs_submitted_total", "Jobs accepted", ["kind", "model"],
                                 registry=self.registry)

    def watch_queues(self, queue: JobQueue, models: list[str]) -> None:
        self.registry.register(QueueCollector(queue, models))

    def render(self) -> bytes:
        return generate_latest(self.registry)


ROUTE_HOLDER = "lantern.route"


class HttpMetricsMiddleware:
    """Counts and times requests by route template (never by raw path: ids would explode labels).

    The router records its match in `scope["route"]` on the scope it is handed; a middleware in
    between that passes down a new dict (as `JsonBodies` did for every POST, so `POST /v1/jobs` was
    `unmatched`) hides it from here. So this outermost middleware puts a holder in the scope (copies
    share it) and `RouteRecorder`, just above the router, fills it. Requests answered before
    routing (401, 413) or matching no route are `unmatched`."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        holder: dict = {}
        scope[ROUTE_HOLDER] = holder
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = getattr(holder.get("route") or scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(scope["method"], template, str(status["code"])).inc()


class RouteRecorder:
    """The innermost middleware: hands the router's match to `HttpMetricsMiddleware`'s holder."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            holder = scope.get(ROUTE_HOLDER)
            if holder is not None and scope.get("route") is not None:
                holder["route"] = scope["route"]
