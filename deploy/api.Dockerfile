# The API image: FastAPI + Redis client, no torch, no transformers (~200 MB). The webhook worker
# and the reaper (`lantern webhook-worker`, package delivery/) run from it too.
#   docker build -f deploy/api.Dockerfile -t lantern-api .
FROM python:3.11-slim
# LANTERN_METRICS_HOST: the webhook worker's metrics port listens on every interface of the container
# (the API itself binds as its CMD says).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 LANTERN_METRICS_HOST=0.0.0.0
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY common ./common
COPY service ./service
COPY lantern ./lantern
COPY delivery ./delivery
RUN pip install . && python -c "import service.main, delivery.webhook_worker, lantern.client, sys, importlib.resources as r; assert 'torch' not in sys.modules; assert r.files('service.ui').joinpath('static/index.html').is_file()"
RUN useradd --uid 10001 --no-create-home lantern
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Keys: LANTERN_API_KEYS_FILE (tenant=sha256 lines) from a secret. Without keys the API is open:
# never publish such a container beyond loopback.
CMD ["lantern", "api", "--host", "0.0.0.0", "--port", "8000"]
