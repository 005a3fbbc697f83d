"""Worker-side Prometheus metrics, served on the worker's own port. No per-job or per-user labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

JOBS_FINISHED = Counter("lantern_jobs_finished_total", "Jobs that ended, by outcome",
                        ["kind", "model", "outcome"])
RUN_SECONDS = Histogram("lantern_job_run_seconds", "Time a job ran on a worker", ["kind"], buckets=RUN_BUCKETS)
QUEUE_WAIT = Histogram("lantern_job_queue_wait_seconds", "Time from enqueue to start", ["kind"],
                       buckets=RUN_BUCKETS)
MODEL_LOAD = Gauge("lantern_model_load_seconds", "Seconds the worker took to load a model", ["model"])
BUSY = Gauge("lantern_worker_busy", "1 while the worker runs a job")
CUDA_MEMORY = Gauge("lantern_cuda_memory_bytes", "CUDA memory of the worker process", ["state"])
LEFTOVER_HOOKS = Counter("lantern_leftover_hooks_total", "Hooks found on a model after a job (should stay 0)")


def observe_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        CUDA_MEMORY.labels("allocated").set(torch.cuda.memory_allocated())
        CUDA_MEMORY.labels("reserved").set(torch.cuda.memory_reserved())
        CUDA_MEMORY.labels("peak_allocated").set(torch.cuda.max_memory_allocated())

# Training checkpoints (workers/models/checkpoints.py): loaded on demand, kept in a byte-bounded LRU.
CHECKPOINT_LOAD = Histogram("lantern_checkpoint_load_seconds", "Time to load a training checkpoint from disk",
                            ["model"], buckets=RUN_BUCKETS)
CHECKPOINT_CACHE = Counter("lantern_checkpoint_cache_total", "Checkpoint cache lookups and evictions", ["event"])
CHECKPOINT_CACHE_BYTES = Gauge("lantern_checkpoint_cache_bytes", "Parameter bytes of the checkpoints held")
CHECKPOINT_CACHE_ENTRIES = Gauge("lantern_checkpoint_cache_entries", "Checkpoints held")
