"""Redis key names both sides agree on (strings only: schemas/ never talks to Redis)."""

PREFIX = "lantern"


def queue_name(model_id: str) -> str:
    """One RQ queue per model id."""
    return f"{PREFIX}:{model_id}"


def worker_key(worker_name: str) -> str:
    """A live worker's facts (JSON), kept alive by its heartbeat TTL."""
    return f"{PREFIX}:worker:{worker_name}"


WORKER_PATTERN = f"{PREFIX}:worker:*"


def cancel_key(job_id: str) -> str:
    return f"{PREFIX}:cancel:{job_id}"


def jobs_index_key(owner: str) -> str:
    """Sorted set of an owner's job ids, scored by submit time."""
    return f"{PREFIX}:jobs:{owner}"


def run_seconds_key(model_id: str) -> str:
    """Hash kind -> moving average of run seconds, for Retry-After estimates."""
    return f"{PREFIX}:runtime:{model_id}"


def tokenizer_key(model_id: str) -> str:
    """A model's tokenizer (tokenizers JSON + chat template), published by its workers so the API
    can count prompt tokens with the model's own tokenizer without importing transformers."""
    return f"{PREFIX}:tokenizer:{model_id}"


def tokenizer_digest_key(model_id: str) -> str:
    return f"{PREFIX}:tokenizer:{model_id}:sha256"


def artifact_key(kind: str, artifact_id: str) -> str:
    """A stored artifact (JSON): kind is `steering-profiles` or `edits`."""
    return f"{PREFIX}:artifact:{kind}:{artifact_id}"


def artifact_index_key(kind: str, owner: str) -> str:
    """Sorted set of an owner's artifact ids of one kind, scored by creation time."""
    return f"{PREFIX}:artifacts:{kind}:{owner}"


def webhook_secret_key(job_id: str) -> str:
    """A job's own webhook secret, kept out of the job payload (which any reader of the queue sees)."""
    return f"{PREFIX}:webhook-secret:{job_id}"


WEBHOOK_QUEUE = f"{PREFIX}:webhooks"  # list of pending deliveries (JSON), oldest at the left
WEBHOOK_RETRIES = f"{PREFIX}:webhooks:retry"  # sorted set of deliveries waiting for their retry time


def webhook_processing_key(worker_name: str) -> str:
    """Deliveries a webhook worker has taken and not yet finished (recovered if it dies)."""
    return f"{PREFIX}:webhooks:processing:{worker_name}"


def active_jobs_key(owner: str) -> str:
    """Sorted set of an owner's queued and running job ids, scored by the time each took its slot
    (`max_active_jobs`): taken by the API at submit, given back by whatever ends the job."""
    return f"{PREFIX}:active:{owner}"


def webhook_status_key(msg_id: str) -> str:
    """A delivery's outcome (JSON: outcome, attempts, last status code), for operators and tests."""
    return f"{PREFIX}:webhook-status:{msg_id}"


def webhook_worker_key(name: str) -> str:
    """A webhook worker's heartbeat."""
    return f"{PREFIX}:webhook-worker:{name}"


def reap_claim_key(what: str) -> str:
    """Taken (SET NX) by the one reaper that handles `what` (a dead worker, a queue's dequeued list)."""
    return f"{PREFIX}:reap:{what}"


SWEEPS_OPEN = f"{PREFIX}:sweeps:open"  # sorted set of sweep (parent) job ids not yet finalized, by submit time


def sweep_result_key(job_id: str) -> str:
    """A finished sweep's result (JSON, `schemas/sweeps.SweepResult`), written once by whoever
    finalizes it first (common/sweeps.py)."""
    return f"{PREFIX}:sweep-result:{job_id}"
