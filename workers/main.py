"""Start a worker: load its models once, then run jobs in-process with a non-forking RQ worker.

    python -m workers.main --model smollm2-135m [--model minilm-l6] [--burst] [--max-jobs N]

(`lantern worker ...` runs this.) CUDA does not survive fork(), and reloading a model per job
would dominate small jobs, so jobs run in the worker process itself (`SimpleWorker`). A heartbeat
thread publishes the worker's model facts under a TTL key; `GET /v1/models` reads them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid

from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from common.metrics_server import metrics_host, serve
from common.registry import load_registry
from common.settings import ProcessSettings
from delivery import reaper
from schemas.keys import queue_name, tokenizer_digest_key, tokenizer_key, worker_key
from workers import metrics, tasks
from workers.models.loading import load_model

log = logging.getLogger("lantern.worker")
HEARTBEAT_TTL_S = ProcessSettings().worker_heartbeat_ttl_s  # dead after this without a beat
HEARTBEAT_S = max(1, HEARTBEAT_TTL_S // 4)
REDIS_SOCKET_TIMEOUT_S = 600


def _heartbeat(connection: Redis, name: str, facts: dict, stop: threading.Event) -> None:
    key = worker_key(name)
    while not stop.is_set():
        try:
            connection.set(key, json.dumps(facts), ex=HEARTBEAT_TTL_S)
        except Exception:  # Redis away: keep trying, the key expires meanwhile
            log.warning("heartbeat failed; retrying", exc_info=True)
        stop.wait(HEARTBEAT_S)


def _publish_tokenizer(connection: Redis, lm) -> None:
    """Let the API count prompt tokens with this model's tokenizer (see service/tokens.py)."""
    tok = lm.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return
    blob = json.dumps({
        "tokenizer": backend.to_str(),
        "chat_template": tok.chat_template if isinstance(tok.chat_template, str) else None,
        "special": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token") if getattr(tok, k, None)},
    })
    with connection.pipeline() as pipe:
        pipe.set(tokenizer_key(lm.id), blob)
        pipe.set(tokenizer_digest_key(lm.id), hashlib.sha256(blob.encode()).hexdigest())
        pipe.execute()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lantern worker")
    parser.add_argument("--model", action="append", required=True, help="model id (repeatable)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs (recycling)")
    parser.add_argument("--metrics-port", type=int,
                        default=ProcessSettings().worker_metrics_port,
                        help="Prometheus port (0: off)")
    parser.add_argument("--metrics-host", default=metrics_host(),
                        help="Prometheus bind address (LANTERN_METRICS_HOST, else LANTERN_HOST, else 127.0.0.1)")
    args = parser.parse_args(argv)
    settings = ProcessSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)

    registry = load_registry()
    unknown = [m for m in args.model if m not in registry]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {sorted(registry)}")
    # The socket timeout must outlast RQ's blocking dequeue (worker_ttl - 15 s), or BLPOP times out.
    connection = Redis.from_url(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, health_check_interval=30)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    for model_id in args.model:
        lm = load_model(registry[model_id])
        tasks.MODELS[model_id] = lm
        metrics.MODEL_LOAD.labels(model_id).set(lm.load_seconds)
        log.info("loaded %s on %s/%s in %.1fs", model_id, lm.device, lm.dtype, lm.load_seconds)
    for lm in tasks.MODELS.values():
        _publish_tokenizer(connection, lm)
    metrics.observe_cuda()
    serve(args.metrics_host, args.metrics_port, log)

    facts = {"worker": name, "host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(),
             "models": [lm.facts() for lm in tasks.MODELS.values()]}
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(connection, name, facts, stop), daemon=True).start()
    reaper.start_thread(connection, list(registry), stop)  # jobs of dead workers: retry once or fail
    queues = [Queue(queue_name(m), connection=connection, serializer=JSONSerializer) for m in args.model]
    worker = SimpleWorker(queues, connection=connection, serializer=JSONSerializer, name=name)
    try:
        worker.work(burst=args.burst, max_jobs=args.max_jobs, with_scheduler=False,
                    logging_level=settings.log_level.upper())
    finally:
        stop.set()
        try:
            connection.delete(worker_key(name))
        except Exception:
            pass


if __name__ == "__main__":
    main()
