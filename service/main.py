"""create_app(settings): the FastAPI app, its routers, and problem+json for every error."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.registry import load_registry
from schemas.common import FieldError, Problem
from schemas.limits import Limits
from service import docs, ui
from service.aio_redis import LoopRedis
from service.auth import ApiKeyAuth, Tenants, parse_secrets
from service.config import Settings
from service.guards import Guards
from service.json_body import JsonBodies
from service.limits import BodySizeLimit
from service.metrics import ApiMetrics, HttpMetricsMiddleware, RouteRecorder
from service.openapi_results import with_result_types
from service.problems import PROBLEM_BASE, ProblemError, problem_response
from service.queue import JobQueue
from service.responses import StrictJSONResponse
from service.routes import artifacts, health, jobs, kserve, models
from service.setting_limits import apply_to_openapi, name_limits
from service.tokens import TokenCounter

log = logging.getLogger("lantern.api")


def _field_errors(exc: RequestValidationError, limits: Limits) -> list[FieldError]:
    out = []
    for e in name_limits(exc.errors(), limits):  # over a hard cap: named as the setting that applies
        ctx = {k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
               for k, v in (e.get("ctx") or {}).items()}
        out.append(FieldError(loc=[p if isinstance(p, (str, int)) else str(p) for p in e["loc"]],
                              msg=e["msg"], type=e["type"], ctx=ctx or None))
    return out


def _warm(app: FastAPI) -> None:
    """Load what the submit checks read before the first request asks: the live workers and the
    tokenizer of every model a worker has published one for (service/tokens.py). Without it each new
    API process (a replica, a uvicorn worker) made its first callers wait for a tokenizer load on the
    thread pool. Redis away: nothing to load; the first submits load it instead."""
    try:
        app.state.queue.live_workers()
        for model in app.state.registry:
            app.state.tokens.load(model)
    except RedisError as e:
        log.warning("start-up warm-up skipped: %s", e)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    await run_in_threadpool(_warm, app)
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limits = Limits()
    app = FastAPI(title="Lantern", version="1.0.0", default_response_class=StrictJSONResponse,  # no NaN out
                  lifespan=_lifespan,
                  description="Explanations of language models as a service: submit a job, poll or "
                              "receive a signed webhook. Errors are RFC 9457 problem+json.",
                  docs_url=None, redoc_url=None)  # /docs from local assets instead: service/docs.py
    connection = Redis.from_url(settings.redis_url, socket_timeout=settings.redis_timeout_s,
                                socket_connect_timeout=settings.redis_timeout_s, health_check_interval=30)
    app.state.settings = settings
    app.state.limits = limits
    app.state.registry = load_registry()
    app.state.queue = JobQueue(connection, settings)
    app.state.tokens = TokenCounter(connection)
    app.state.metrics = ApiMetrics()
    app.state.aio = LoopRedis(settings.redis_url, settings.redis_timeout_s)  # for the steps on the event loop
    app.state.guards = Guards(connection, settings, app.state.aio)
    app.state.tenants = Tenants.from_settings(settings.api_keys, settings.api_keys_file)
    app.state.webhook_secrets = parse_secrets(settings.webhook_secrets)
    if app.state.tenants.open:
        log.warning("no API keys configured (LANTERN_API_KEYS / LANTERN_API_KEYS_FILE): the API is OPEN, "
                    "every caller is the tenant 'anonymous'; bind it to loopback only")
    app.state.metrics.watch_queues(app.state.queue, list(app.state.registry))

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem_response(exc.problem, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = _field_errors(exc, limits)
        if any(e.type == "json_invalid" for e in errors):
            return problem_response(Problem(type=PROBLEM_BASE + "malformed-json", title="The body is not valid JSON",
                                            status=400, detail=errors[0].msg, errors=errors))
        detail = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:10])
        return problem_response(Problem(type=PROBLEM_BASE + "invalid-request", title="The request is invalid",
                                        status=422, detail=detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return problem_response(Problem(title=str(exc.detail), status=exc.status_code), getattr(exc, "headers", None))

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception):
        log.warning("Redis unavailable: %s", exc)
        return problem_response(Problem(type=PROBLEM_BASE + "unavailable", title="The job store is unavailable",
                                        status=503, detail="Redis is not reachable; retry shortly"),
                                {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(type=PROBLEM_BASE + "internal", title="Internal error", status=500))

    for router in (jobs.router, models.router, kserve.router, artifacts.router, health.router):
        app.include_router(router)
    docs.install(app)  # /docs (Swagger UI, no CDN), /problems/<slug> (the problem type pages)

    def openapi() -> dict:  # the configured limits in place of the schemas' hard caps
        if app.openapi_schema is None:
            app.openapi_schema = apply_to_openapi(with_result_types(FastAPI.openapi(app)), limits)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    ui.install(app)  # /ui (the explorer page); result schemas in the OpenAPI document
    app.add_middleware(RouteRecorder)  # innermost: the router's match, for HttpMetricsMiddleware
    app.add_middleware(JsonBodies)
    app.add_middleware(ApiKeyAuth, tenants=app.state.tenants, gate=app.state.guards)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics)
    return app
