# The model worker image: CUDA runtime, torch (CUDA build), transformers, the bundled models.
#   docker build -f deploy/worker.Dockerfile -t lantern-worker .
# The webhook worker runs from the API image (`lantern webhook-worker`): it holds no model.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY service ./service
COPY workers ./workers
RUN pip install '.[worker]'
RUN useradd --uid 10001 --no-create-home lantern
USER 10001
EXPOSE 9101
# One job at a time per process; --max-jobs recycles the process (memory fragmentation).
CMD ["lantern", "worker", "--model", "smollm2-135m", "--max-jobs", "1000"]
