"""Give a tenant's `max_active_jobs` slot back when its job ends (the slot set is taken by the API,
service/guards.py). Light: the webhook worker's reaper uses it too, without torch."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq.job import Job

from schemas.keys import active_jobs_key

log = logging.getLogger("lantern.worker")


def release_slot(job: Job) -> None:
    """Best effort: the API prunes ended or vanished jobs from the slot set on every check, so a
    release lost to a Redis hiccup leaks nothing."""
    try:
        job.connection.zrem(active_jobs_key(job.meta.get("owner", "anonymous")), job.id)
    except RedisError:
        log.warning("job %s: could not release its active-job slot", job.id)
