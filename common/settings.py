"""The settings every Lantern process reads, from `LANTERN_*` environment variables: the one place the
environment is read (the API's settings, service/config.py, the webhook settings,
common/webhook_queue.py, and the limits, schemas/limits.py, extend or sit beside this tree).

Each reader builds `ProcessSettings()` where it starts (a process, a reaper pass), so a changed
environment is seen by the next one.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LANTERN_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    metrics_host: str | None = Field(None, description="address the metrics endpoints bind; default: `host`")
    embedded_redis_port: int = Field(6390, description="`lantern run`: the port of the Redis it starts")
    models_file: str | None = Field(None, description="a JSON list of registry entries (schemas/models.py ModelSpec)")
    models: str | None = Field(None, description="the same JSON inline")

    # -- webhooks: the API checks them at submit, the webhook worker when it delivers ----------------
    webhook_secrets: str | None = Field(None, description="`tenant=whsec_...` pairs: a tenant's default webhook secret")
    webhook_allowed_networks: str = Field("", description="CIDRs webhooks may reach besides public addresses")

    # -- model workers (workers/main.py, workers/internals/batching.py) --------------------------------
    worker_heartbeat_ttl_s: int = Field(20, ge=2, description="a worker without a beat this long is dead")
    worker_metrics_port: int = Field(9101, ge=0, description="0: off")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: torch's choice")
    batch_tokens: int | None = Field(None, ge=1, description="token positions per batch; default: from free memory")
    forward_overhead: int | None = Field(None, ge=0, description="fixed cost of one forward, in token positions")

    # -- webhook worker and reaper (delivery/) ----------------------------------------------------------
    webhook_concurrency: int = Field(4, ge=1)
    webhook_metrics_port: int = Field(9102, ge=0, description="0: off")
    reaper_interval_s: float = Field(5.0, gt=0)
    worker_lost_retries: int = Field(1, ge=0, description="requeues of a job whose worker died, then it fails")
    dequeue_grace_s: float = Field(10.0, ge=0, description="a dequeued job not started within this is requeued")

    @property
    def metrics_bind(self) -> str:
        return self.metrics_host or self.host

