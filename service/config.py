"""API settings, from `LANTERN_*` environment variables: the process settings every Lantern process
reads (common/settings.py: Redis URL, host, port, log level) and the API's own."""

from __future__ import annotations

from pydantic import Field

from common.settings import ProcessSettings


class Settings(ProcessSettings):
    result_ttl_s: int = Field(24 * 3600, ge=60, description="how long a finished job's result is kept")
    failure_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="how long a failed job is kept")
    queued_ttl_s: int = Field(24 * 3600, ge=60, description="a job not started within this is dropped")
    max_queue_depth: int = Field(1000, ge=1, description="per model queue; beyond it submit answers 503")
    jobs_index_size: int = Field(10_000, ge=10, description="recent jobs listed per owner")
    redis_timeout_s: float = Field(2.0, gt=0)
    max_wait_s: float = Field(30.0, ge=0, le=3600, description="cap of `wait` on GET /v1/jobs/{id} (long polling)")

    # -- tenants, limits, idempotency (service/auth.py, service/guards.py) --------------------------
    api_keys: str | None = Field(None, description="`tenant=key` pairs, comma separated (keys in clear: dev/CI)")
    api_keys_file: str | None = Field(None, description="file of `tenant=<sha256 hex of the key>` lines")
    rate_limit_per_s: int = Field(50, ge=1, description="requests per second per tenant (fixed 1 s window)")
    rate_limit_burst_per_min: int = Field(1500, ge=1, description="requests per minute per tenant")
    max_active_jobs: int = Field(100, ge=1, description="queued + running jobs per tenant; beyond it submit is 429")
    auth_failures_per_min: int = Field(20, ge=1, description="wrong API keys per client address per minute; "
                                       "beyond it the address is 429 until the minute ends")
    idempotency_ttl_s: int = Field(24 * 3600, ge=60, description="how long an Idempotency-Key is remembered")
